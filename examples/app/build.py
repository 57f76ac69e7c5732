"""The example stack's build step: records when and from which commit it was built."""

import json
import subprocess
import time

commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
info = {"built_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "commit": commit}
with open("build-info.json", "w") as f:
    json.dump(info, f)
print("build-info.json:", info)
