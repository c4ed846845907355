"""Run a command where only the loopback exists: a private network namespace (Linux user namespaces).

    python -m rnnlab.scale.netns mpiexec -n 2 rnnlab train ...      # an MPI run nobody else can reach

Ray (2.60) and MPI launchers (MPICH's hydra, the ranks' network modules) bind servers to every interface of
the machine. Inside a new network namespace the only interface is the loopback, so whatever they bind cannot
be reached from another machine, while the processes of one job still talk to each other. ``rnnlab sweep``
without ``--address`` runs itself this way where the kernel allows it (unprivileged user namespaces; most
distributions), and says so when it cannot. Files written inside belong to the calling user.
"""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys

UNSHARE = ["unshare", "--user", "--map-root-user", "--net"]
ENV = "RNNLAB_NETNS"                 # set inside the namespace


def available() -> bool:
    """Whether this process can make a private network namespace (and is not inside one already)."""
    if sys.platform != "linux" or os.environ.get(ENV) or not shutil.which("unshare"):
        return False
    return subprocess.run(UNSHARE + ["true"], capture_output=True).returncode == 0


def command(argv) -> list:
    """The command line that runs ``argv`` inside a new loopback-only namespace (via this module)."""
    return UNSHARE + ["--", sys.executable, "-m", "rnnlab.scale.netns", "--inside"] + list(argv)


def loopback_up() -> None:
    """Bring the new namespace's loopback interface up (it starts down)."""
    import fcntl
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sk:
        flags = struct.unpack("16sh", fcntl.ioctl(sk, SIOCGIFFLAGS, struct.pack("16sh", b"lo", 0)))[1]
        fcntl.ioctl(sk, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def run(argv, **kw) -> int:
    """Run ``argv`` loopback-only and return its exit code; a clear error where no namespace can be made."""
    if not available():
        raise OSError("rnnlab.scale.netns: cannot make a private network namespace here (needs Linux, the unshare "
                      "command and unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1)")
    return subprocess.call(command(argv), **kw)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--inside"]:
        loopback_up()
        os.environ[ENV] = "1"
        os.execvp(argv[1], argv[1:])
    if not argv:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        return run(argv)
    except OSError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
