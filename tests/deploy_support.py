"""Paths of the deployment files, and deploy/compose/nginx/nginx.conf made runnable here."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "compose"
K8S = ROOT / "deploy" / "k8s"
NGINX_CONF = COMPOSE / "nginx" / "nginx.conf"


def nginx_config(workdir: Path, port: int, upstreams: list[str], *, tag: bool = False) -> Path:
    """The shipped nginx.conf with the Compose service names replaced by ``upstreams`` and
    the listen port by ``port`` on 127.0.0.1, its pid, logs and temporary files in
    ``workdir``. ``tag`` adds an ``X-Kefu-Upstream`` response header (which node answered:
    tests only, it would show internal addresses)."""
    text = NGINX_CONF.read_text()
    servers = re.findall(r"^(\s*server )(kefu[\w-]*:8080)( .*)$", text, re.M)
    assert len(servers) == len(upstreams), servers
    for (indent, name, rest), address in zip(servers, upstreams, strict=True):
        text = text.replace(f"{indent}{name}{rest}", f"{indent}{address}{rest}")
    text, found = re.subn(r"listen 8080;", f"listen 127.0.0.1:{port};", text)
    assert found == 1
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    text = text.replace("access_log /dev/stdout;", f"access_log {logs / 'access.log'};")
    text = text.replace("error_log /dev/stderr warn;", f"error_log {logs / 'error.log'} info;")
    temp = "".join(
        f"    {kind}_temp_path {workdir / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + temp, 1)
    if tag:
        text = text.replace(
            "proxy_pass http://kefu;",
            "proxy_pass http://kefu;\n"
            "            add_header X-Kefu-Upstream $upstream_addr always;",
        )
    head = f"pid {workdir / 'nginx.pid'};\nerror_log {logs / 'error.log'} info;\n"
    if os.geteuid() == 0:  # workers as root too: they write the temp paths in workdir
        head += "user root;\n"
    path = workdir / "nginx.conf"
    path.write_text(head + text, encoding="utf-8")
    return path
