#!/usr/bin/env bash
# Install what the live SLURM controller tests (tests/slurm/) need: Debian's
# slurm-wlm (slurmctld, slurmd, client commands) and munge. Idempotent: does
# nothing when the commands are already there. Only as root; elsewhere it says
# why it skipped and exits 0 (the tests then skip with a reason).
# Installing does not start any daemon: the test fixture starts its own.
set -euo pipefail

need=()
for cmd in slurmctld slurmd sbatch squeue sinfo scontrol; do
    command -v "$cmd" >/dev/null 2>&1 || need=(slurm-wlm)
done
command -v munged >/dev/null 2>&1 || need+=(munge)
if [ "${#need[@]}" -eq 0 ]; then
    echo "[setup_slurm] slurm and munge already installed ($(sinfo --version 2>/dev/null || echo "$(dpkg-query -W -f '${Version}' slurmctld 2>/dev/null)"))"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "[setup_slurm] not root: not installing ${need[*]} (the SLURM tests will skip)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "[setup_slurm] no apt-get: not installing ${need[*]} (the SLURM tests will skip)"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Keep the package scripts from starting the daemons (there is no init system
# in CI containers, and the fixture starts them with its own config).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    created_policy=1
fi
cleanup() { if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
echo "[setup_slurm] apt-get install ${need[*]}"
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; then
    echo "[setup_slurm] apt-get failed: the SLURM tests will skip" >&2
    exit 0
fi
echo "[setup_slurm] installed slurm $(dpkg-query -W -f '${Version}' slurmctld)"
