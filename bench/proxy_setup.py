"""The fixed inputs of bench/proxy.py: nginx and Caddy configurations, the programs it
starts (a WebSocket echo server, Berth without metrics, Berth workers) and the wrk Lua
scripts of its request shapes. Templates are filled with `str.format`."""

NGINX_COMMON = """
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx-{name}.pid;
error_log {tmp}/nginx-{name}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body-{name}; proxy_temp_path {tmp}/proxy-{name};
  fastcgi_temp_path {tmp}/fcgi-{name}; uwsgi_temp_path {tmp}/uwsgi-{name};
  scgi_temp_path {tmp}/scgi-{name};
  keepalive_requests 10000000;
  {body}
}}
"""

NGINX_BACKEND = """
  server {{ listen 127.0.0.1:{port} reuseport; location / {{ return 200 "hello world\\n"; }} }}
  server {{
    listen 127.0.0.1:{app} reuseport;
    location / {{
      add_header X-Request-Id $request_id always;
      add_header Set-Cookie "sid=$request_id; Path=/; HttpOnly; SameSite=Lax" always;
      add_header Cache-Control "private, no-store" always;
      return 200 "hello world\\n";
    }}
  }}
"""

NGINX_PROXY = """
  upstream backend {{ server 127.0.0.1:{backend}; keepalive {keepalive}; }}
  upstream app {{ server 127.0.0.1:{app}; keepalive {keepalive}; }}
  upstream ws {{ server 127.0.0.1:{ws}; }}
  server {{
    listen 127.0.0.1:{port};
    location /app {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
    }}
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
    }}
    location /ws {{
      proxy_pass http://ws;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 3600s;
    }}
  }}
"""

CADDYFILE = """
{{
  admin off
  auto_https off
}}
http://127.0.0.1:{port} {{
  reverse_proxy /app* 127.0.0.1:{app}
  reverse_proxy 127.0.0.1:{backend}
}}
"""

WS_ECHO = """
import asyncio, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), compression=None) as s:
        await s.serve_forever()
asyncio.run(main())
"""

# Berth's external proxy started from a snippet: argv state dir, bind address, then flags:
# "reuse-port" (SO_REUSEPORT workers sharing the port) and "metrics-off"
# (ProxyConfig(metrics=False): the comparison side of the metrics-cost pairs).
BERTH_PROXY = """
import sys
from agent.logs import setup_logging
from agent.proxy.config import ProxyConfig
from agent.proxy.main import main_external
from agent.settings import AgentSettings
from pathlib import Path
setup_logging("proxy")
state = Path(sys.argv[1])
settings = AgentSettings(state_dir=state, run_dir=state / "run", proxy_bind=sys.argv[2])
flags = sys.argv[3:]
config = ProxyConfig(reuse_port="reuse-port" in flags, metrics="metrics-off" not in flags)
sys.exit(main_external(settings, config))
"""


VARY_SCRIPT = """
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/?n=" .. n)
end
"""

# --fresh: a different request-target and header value for every request
FRESH_SCRIPT = """
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/?n=" .. n, {["X-Request-Id"] = tostring(n)})
end
"""


# the realistic leg: nothing in a request head repeats, as with browsers behind a site
REALISTIC_SCRIPT = """
local n = 0
local agents = {
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/",
}
request = function()
  n = n + 1
  local path = "/app/items/" .. (n % 997) .. "/detail?id=" .. n .. "&sort=" .. (n % 7)
  return wrk.format("GET", path, {
    ["User-Agent"] = agents[(n % 3) + 1] .. (100 + n % 40) .. "." .. n,
    ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ["Accept-Language"] = "en-GB,en;q=0.9",
    ["Accept-Encoding"] = "gzip, deflate, br",
    ["Cookie"] = "session=s" .. (n * 7919) .. "; theme=dark; _ga=GA1.2." .. n .. ".1700000000",
  })
end
"""
