"""The image table: which program a container's `image:` runs in netlab (no registry, no
image layers: each image is a program installed on the machine), and the files it needs.

| image                                   | runs                                        |
|-----------------------------------------|---------------------------------------------|
| netlab/hello                            | netlab-hello --port <containerPort> (answers with the pod's name) |
| nginx, sammyliu8/nginx (tag :latest)    | Debian's nginx: `nginx -g 'daemon off;'`, the stock welcome page on containerPort |
| (none, with command)                    | the command, from the machine's file system |

nginx gets, in the container's own mount namespace, a config of its own over
/etc/nginx/nginx.conf (listen on the containerPort, pid and temp files in its run
directory, logs to stdout/stderr as docker's nginx image has them) and its own
/var/lib/nginx and /var/log/nginx, so that many nginx containers on one machine never share
a pid file or temp directory. Pure: the kubelet makes the files and binds.
"""

from __future__ import annotations

HELLO = "netlab/hello"
NGINX = "nginx"
# image name (without tag) -> program kind
IMAGES = {HELLO: "hello", "nginx": NGINX, "library/nginx": NGINX, "docker.io/library/nginx": NGINX,
          "sammyliu8/nginx": NGINX}
NGINX_ARGV = ["nginx", "-g", "daemon off;"]  # the image's CMD, as the seed's docker ps shows it
NGINX_HTML = "/usr/share/nginx/html"  # Debian's stock welcome page (index.html)


def kind(image: str | None) -> str | None:
    """The program kind of an image, or None if netlab has no program for it."""
    if not image:
        return None
    # Only :latest: the machine has one nginx (Debian's 1.22), so nginx:1.25 would be a lie.
    return IMAGES.get(image.removesuffix(":latest"))


def known() -> str:
    return ", ".join(sorted(i for i in IMAGES if not i.startswith(("library/", "docker.io/"))))


def nginx_conf(port: int, run_dir: str) -> str:
    """nginx.conf of one container: its port, its pid and temp paths under run_dir."""
    return f"""# netlab: this container's nginx (image table: netlab/plan/images.py)
worker_processes 1;
pid {run_dir}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    client_body_temp_path {run_dir}/client_body;
    proxy_temp_path {run_dir}/proxy;
    fastcgi_temp_path {run_dir}/fastcgi;
    uwsgi_temp_path {run_dir}/uwsgi;
    scgi_temp_path {run_dir}/scgi;
    sendfile on;
    keepalive_timeout 65;
    server {{
        listen {port} default_server;
        server_name _;
        root {NGINX_HTML};
        index index.html index.htm;
        location / {{ try_files $uri $uri/ =404; }}
    }}
}}
"""
