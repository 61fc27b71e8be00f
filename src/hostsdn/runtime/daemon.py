"""``hostsdn up`` / ``down`` / ``reload``: the names callers know, from the modules that
do each job (split by job, see docs/operate.md):

* ``runtime/slowpath.py`` - the packet loop (``SlowPath``);
* ``runtime/control.py`` - the control channel: other threads' jobs into that loop;
* ``runtime/reload.py`` - the one reload path (SIGHUP, the API, ``hostsdn reload``);
* ``runtime/serving.py`` - ``serve``: topology, datapath, services, loop, teardown;
* ``runtime/daemonize.py`` - ``--daemon`` (double fork) and ``down``;
* ``runtime/rundir.py`` - pidfile, state, answer, log and socket paths;
* ``runtime/logs.py`` - text / JSON logs.
"""

from __future__ import annotations

from hostsdn.errors import DaemonError
from hostsdn.runtime.control import ControlBusy, ControlChannel, ControlClosed
from hostsdn.runtime.daemonize import STOP_TIMEOUT, start_daemon, stop_daemon
from hostsdn.runtime.reload import (
    Reloader,
    ReloadOutcome,
    TopologyChanged,
    check_reload_request,
    check_reloadable,
    reload_datapath,
)
from hostsdn.runtime.rundir import (
    RUN_DIR,
    check_not_running,
    pidfile_path,
    read_pid,
    run_dir,
    running_pid,
    socket_path,
)
from hostsdn.runtime.serving import ServeContext, Service, UpOptions, make_datapath, serve
from hostsdn.runtime.slowpath import SlowPath, UpStatus, nic_hits, receive_exception

__all__ = ["RUN_DIR", "STOP_TIMEOUT", "ControlBusy", "ControlChannel", "ControlClosed",
           "DaemonError", "ReloadOutcome", "Reloader", "ServeContext", "Service",
           "SlowPath", "TopologyChanged", "UpOptions", "UpStatus", "check_not_running",
           "check_reload_request", "check_reloadable", "make_datapath", "nic_hits",
           "pidfile_path", "read_pid", "receive_exception", "reload_datapath", "run_dir",
           "running_pid", "serve", "socket_path", "start_daemon", "stop_daemon"]
