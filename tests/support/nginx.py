"""A real nginx running ``deploy/nginx.conf`` as shipped, on loopback ports.

The shipped file is the ``http``-level part of nginx's configuration (compose
mounts it as ``conf.d/default.conf``). Only what names the deployment's hosts
changes: the upstream servers become local edges and ``listen 80`` a free
loopback port. Every directive that shapes SSE and WebSocket traffic (no
buffering, timeouts, Upgrade, keep-alive, next-upstream) is the file's own.
nginx runs as a single foreground process with its files in a temporary
folder: no system configuration, no privileged port, stopped by PID.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.support.processes import ROOT, Process

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def site_config(edge_ports: list[int], port: int) -> str:
    """``deploy/nginx.conf`` with its edges and its listen port made local."""
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    servers = re.findall(r"^(\s*server )(\S+)( .*;)$", conf, flags=re.M)
    if len(servers) != len(edge_ports):
        raise ValueError(f"deploy/nginx.conf names {len(servers)} edges, not {len(edge_ports)}")
    for (head, host, tail), edge_port in zip(servers, edge_ports, strict=True):
        conf = conf.replace(f"{head}{host}{tail}", f"{head}127.0.0.1:{edge_port}{tail}", 1)
    conf, listens = re.subn(r"^(\s*)listen 80;$", rf"\g<1>listen 127.0.0.1:{port};", conf,
                            flags=re.M)
    if listens != 1:
        raise ValueError("deploy/nginx.conf does not listen on port 80 once")
    return conf


def start_nginx(folder: Path, edge_ports: list[int], port: int) -> Process:
    if NGINX is None:
        raise RuntimeError("nginx is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenwire.conf").write_text(site_config(edge_ports, port))
    temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    (folder / "nginx.conf").write_text(f"""
daemon off;
master_process off;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {temp['body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    include {folder}/tokenwire.conf;
}}
""")
    return Process("nginx", [NGINX, "-e", str(folder / "error.log"), "-p", str(folder),
                             "-c", str(folder / "nginx.conf")], {}, folder)
