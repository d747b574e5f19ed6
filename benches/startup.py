"""Time from process start to the first answered request: spawns ARGS and polls URL every 0.5 ms."""
import http.client
import subprocess
import sys
import time
import urllib.parse

url, args = sys.argv[1], sys.argv[2:]
parts = urllib.parse.urlsplit(url)
started = time.monotonic()
process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    while True:
        try:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=1)
            connection.request("GET", parts.path)
            if connection.getresponse().status == 200:
                break
        except OSError:
            pass
        if process.poll() is not None:
            sys.exit(f"the server exited with {process.returncode}")
        time.sleep(0.0005)
    print(f"{(time.monotonic() - started) * 1000:.1f}")
finally:
    process.terminate()
    process.wait()
