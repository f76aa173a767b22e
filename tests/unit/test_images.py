from netlab.api.pods import container_argv
from netlab.plan import images


def test_image_table():
    assert images.kind("nginx") == images.kind("sammyliu8/nginx") == images.kind("nginx:latest") == "nginx"
    assert images.kind("netlab/hello") == "hello"
    assert images.kind("nginx:1.25") is None and images.kind("redis") is None and images.kind(None) is None


def test_nginx_runs_as_the_seed_shows_it_and_listens_on_the_container_port():
    c = {"name": "web", "image": "sammyliu8/nginx", "ports": [{"containerPort": 8080, "protocol": "TCP"}]}
    assert container_argv(c) == ["nginx", "-g", "daemon off;"]
    conf = images.nginx_conf(8080, "/var/lib/nginx")
    assert "listen 8080 default_server;" in conf and "pid /var/lib/nginx/nginx.pid;" in conf
    assert "client_body_temp_path /var/lib/nginx/client_body;" in conf and "root /usr/share/nginx/html;" in conf
