"""Real namespaces for the deploy tests (deploy/tests/test_views.py) and the
benchmark (bench/bench.py, S7): one unprivileged daemon in a mount and PID
namespace of its own, and pods (jobs) each in new namespaces with an
overlayfs of an image at a fixed path and the socket directory bind-mounted
into it. Plain functions building argv lists; the callers run them.
"""

import os
import shutil
import subprocess

# The interpreter of the images: the system's 3.11 (pods of other users
# cannot reach pyenv's under /root).
IMAGE_PYTHON = "/usr/bin/python3.11"
NOBODY = 65534
ROOTLESS_UID = 4321

# A pod: the image's overlayfs at $4 (lower $1, upper $2, work $3), the
# socket directory $5 bind-mounted at $4/run, then the command after them.
POD_SCRIPT = ('set -e; mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"; '
              'mkdir -p "$4/run"; mount --bind "$5" "$4/run"; shift 5; exec "$@"')


def copy_client(site, venv):
    """Copies the finderd client (every `finderd*` entry of the site-packages
    directory @site) into @venv, a venv of IMAGE_PYTHON."""
    target = os.path.join(venv, "lib", "python3.11", "site-packages")
    for entry in os.listdir(site):
        if entry.startswith("finderd"):
            source = os.path.join(site, entry)
            if os.path.isdir(source):
                shutil.copytree(source, os.path.join(target, entry))
            else:
                shutil.copy2(source, target)


def daemon_argv(finderd_bin, hidden, socket_path, extra=(), user=NOBODY):
    """The daemon as @user with no capabilities (setpriv), in a mount and PID
    namespace of its own where @hidden (the pods' mount point) is an empty
    tmpfs, like a DaemonSet without hostPID: what it answers of a pod's paths
    it can only have read through the pod's view."""
    return ["unshare", "--mount", "--pid", "--fork", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs tmpfs "$1" && shift 2 && exec setpriv --reuid %d --regid %d '
            '--clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs "$@"'
            % (user, user),
            "sh", hidden, "--", finderd_bin, "serve", "--socket", socket_path,
            "--socket-mode", "666", *extra]


def pod_dirs(pod, rootless):
    """upper/ and work/ of the overlayfs of a pod under @pod (owned by the
    rootless uid when @rootless)."""
    upper, work = os.path.join(pod, "upper"), os.path.join(pod, "work")
    os.makedirs(upper)
    os.makedirs(work)
    if rootless and os.geteuid() == 0:
        for path in (pod, upper, work):
            os.chown(path, ROOTLESS_UID, ROOTLESS_UID)
    return upper, work


def pod_namespaces(rootless):
    """The namespaces of a new pod: mount and PID; rootless, also a user
    namespace of ROOTLESS_UID (its processes are root in there), entered as
    that uid when this process is root."""
    namespaces = ["unshare", "--mount", "--pid", "--fork", "--propagation", "private"]
    if not rootless:
        return namespaces
    unshare = ["unshare", "--user", "--map-root-user"] + namespaces[1:]
    if os.geteuid() != 0:
        return unshare
    return ["setpriv", "--reuid", str(ROOTLESS_UID), "--regid", str(ROOTLESS_UID),
            "--clear-groups"] + unshare


def pod_argv(rootless, image, upper, work, app, sockdir, argv):
    """A new pod running @argv with @image's overlayfs at @app and @sockdir at @app/run."""
    return pod_namespaces(rootless) + ["sh", "-c", POD_SCRIPT, "sh", image, upper, work, app,
                                       sockdir, *argv]


def rootless_pods_unavailable(scratch):
    """Why a rootless pod with an overlayfs cannot be made here, or None:
    tries one (an empty image) under the directory @scratch."""
    for tool in ("unshare", "setpriv"):
        if not shutil.which(tool):
            return "%s(1) is missing" % tool
    if not os.access(IMAGE_PYTHON, os.X_OK):
        return "%s (the images' interpreter) is missing" % IMAGE_PYTHON
    probe = os.path.join(scratch, "probe")
    shutil.rmtree(probe, ignore_errors=True)
    os.makedirs(os.path.join(probe, "image"))
    os.makedirs(os.path.join(probe, "app"))
    os.makedirs(os.path.join(probe, "sock"))
    os.chmod(probe, 0o755)
    try:
        upper, work = pod_dirs(os.path.join(probe, "pod"), rootless=True)
        proc = subprocess.run(pod_argv(True, os.path.join(probe, "image"), upper, work,
                                       os.path.join(probe, "app"), os.path.join(probe, "sock"),
                                       ["true"]),
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            return ("no rootless pod (an unprivileged user namespace with an overlayfs mount) "
                    "here: %s" % (proc.stderr.strip() or "exit %d" % proc.returncode))
        return None
    finally:
        shutil.rmtree(probe, ignore_errors=True)
