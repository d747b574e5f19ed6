"""Time from process start to the first answered request: spawns ARGS and polls URL every 0.5 ms.

Usage: startup.py [--auth USER:PASS] [--keep] URL ARGS...
Prints the milliseconds. With --keep the process is left running and its pid printed after the
milliseconds. A launcher that exits with status 0 (a script that starts a server in the background)
is waited past: polling goes on until the URL answers.
"""
import base64
import http.client
import subprocess
import sys
import time
import urllib.parse

args = sys.argv[1:]
headers, keep = {}, False
while args[0].startswith("--"):
    option = args.pop(0)
    if option == "--auth":
        headers["Authorization"] = "Basic " + base64.b64encode(args.pop(0).encode()).decode()
    elif option == "--keep":
        keep = True
    else:
        sys.exit(f"unknown option {option}")
url, command = args[0], args[1:]
parts = urllib.parse.urlsplit(url)
path = parts.path + (f"?{parts.query}" if parts.query else "")
started = time.monotonic()
process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
answered = False
try:
    while True:
        try:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=1)
            connection.request("GET", path, headers=headers)
            if connection.getresponse().status == 200:
                break
        except OSError:
            pass
        if process.poll() not in (None, 0):
            sys.exit(f"the server exited with {process.returncode}")
        if time.monotonic() - started > 300:
            sys.exit(f"{url} did not answer within 300 s")
        time.sleep(0.0005)
    answered = True
    elapsed = f"{(time.monotonic() - started) * 1000:.1f}"
    print(f"{elapsed} {process.pid}" if keep else elapsed)
finally:
    if not (keep and answered):
        process.terminate()
        process.wait()
