"""`make demo`: sync the ceph-rgw example into a local Kubernetes API test server, twice.

Starts the in-repo API test server on 127.0.0.1, runs `endpoints-sync run` on
examples/ceph-rgw/ twice, and shows the objects written and the write requests each run
made (the second run makes none).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.kubeapi import KubeApiServer  # noqa: E402

CONFIG = ROOT / "examples" / "ceph-rgw" / "config.yaml"


def sync(kubeconfig: Path) -> int:
    cmd = [sys.executable, "-m", "syncer", "run", "-c", str(CONFIG), "--kubeconfig",
           str(kubeconfig)]
    print("$ endpoints-sync run -c examples/ceph-rgw/config.yaml", flush=True)
    return subprocess.run(cmd, check=False).returncode


def main() -> int:
    with KubeApiServer(namespaces=("default", "storage")) as server, \
            tempfile.TemporaryDirectory() as tmp:
        kubeconfig = server.write_kubeconfig(Path(tmp) / "kubeconfig")
        print(f"Kubernetes API test server on {server.url}\n")
        for attempt in ("first", "second"):
            server.reset_requests()
            code = sync(kubeconfig)
            methods = Counter(r.method for r in server.requests)
            writes = sum(n for m, n in methods.items() if m != "GET")
            print(f"-> {attempt} run: exit {code}; {writes} write requests; all requests: "
                  f"{dict(sorted(methods.items()))}\n")
            if code != 0:
                return code
        kubectl = shutil.which("kubectl")
        if kubectl:
            cmd = [kubectl, "--kubeconfig", str(kubeconfig), "--cache-dir", f"{tmp}/cache",
                   "get", "services,endpoints,endpointslices", "-n", "storage", "-o", "wide"]
            print("$ kubectl get services,endpoints,endpointslices -n storage -o wide")
            subprocess.run(cmd, check=False)
        else:
            for kind in ("Service", "EndpointSlice", "Endpoints"):
                for obj in server.list_objects(kind, "storage"):
                    print(f"{kind} {obj['metadata']['namespace']}/{obj['metadata']['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
