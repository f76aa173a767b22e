from netlab.lab import docker


def _c(**kw):
    c = {"id": "a" * 64, "image": "sammyliu8/nginx", "argv": ["/usr/sbin/nginx", "-g", "daemon off;"],
         "created": 1000.0, "running": True, "exitCode": 0, "finished": None, "network": "container:x",
         "name": "k8s_web_p_default_u_0", "labels": {}}
    c.update(kw)
    return c


def test_columns_as_docker_prints_them():
    f = docker._fields(_c(), no_trunc=False, now=1000.0 + 3 * 86400)
    assert f["ID"] == "a" * 12 and f["Command"] == "\"nginx -g 'daemon of…\"" and f["Status"] == "Up 3 days"
    assert docker._fields(_c(), no_trunc=True, now=1010.0)["Command"] == "\"nginx -g 'daemon off;'\""
    gone = docker._fields(_c(running=False, exitCode=137, finished=1100.0), False, 1160.0)
    assert gone["Status"] == "Exited (137) About a minute ago"
    text = docker._tabulate([["CONTAINER ID", "NAMES"], ["abc", "k8s_x"]])
    assert text == "CONTAINER ID   NAMES\nabc            k8s_x\n"
