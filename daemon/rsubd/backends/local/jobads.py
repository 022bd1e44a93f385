"""Submit description to job ads, as condor_submit and the schedd build them.

The attribute names and the values at submit time follow the ads captured from
a real HTCondor 25 schedd after `submit(spool=True)`: held with HoldReasonCode
16, `Iwd` rewritten to the spool directory, `SUBMIT_Iwd`/`SUBMIT_Cmd` keeping
the submitter's paths, `TransferOutputRemaps` undefined with the remaps kept in
`SUBMIT_TransferOutputRemaps`.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rsubd.backends.local.ads import Ad, parse_value
from rsubd.backends.schedd import ErrorKind, HoldCode, JobStatus, ScheddError
from rsubd.submitdesc import attr_name

SPOOL_HOLD_REASON = "Spooling input data files"

UNIVERSES = {"vanilla": 5, "scheduler": 7, "local": 12}
SCHEDULER_UNIVERSE = 7

# Submit commands whose value becomes an attribute as it is (a string).
STRING_COMMANDS = {
    "transfer_input_files": "TransferInput",
    "transfer_output_files": "TransferOutput",
    "should_transfer_files": "ShouldTransferFiles",
    "when_to_transfer_output": "WhenToTransferOutput",
    "batch_name": "JobBatchName",
    "accounting_group": "AcctGroup",
    "accounting_group_user": "AcctGroupUser",
    "log": "UserLog",
    "remove_kill_sig": "RemoveKillSig",
    "notify_user": "NotifyUser",
}
# `notification` as condor_submit stores it: JobNotification, an integer (HTCondor's NotifyWhen).
NOTIFICATION = {"never": 0, "always": 1, "complete": 2, "error": 3}
# Submit commands whose value is a ClassAd expression.
EXPR_COMMANDS = {
    "leave_in_queue": "LeaveJobInQueue",
    "requirements": "Requirements",
    "rank": "Rank",
    "periodic_hold": "PeriodicHold",
    "periodic_hold_reason": "PeriodicHoldReason",
    "periodic_hold_subcode": "PeriodicHoldSubCode",
    "periodic_remove": "PeriodicRemove",
    "periodic_release": "PeriodicRelease",
    "request_cpus": "RequestCpus",
    "request_memory": "RequestMemory",
    "request_disk": "RequestDisk",
    "request_gpus": "RequestGPUs",
    "priority": "JobPrio",
    "preserve_relative_paths": "PreserveRelativePaths",
    "transfer_executable": "TransferExecutable",
    "on_exit_remove": "OnExitRemove",
    "on_exit_hold": "OnExitHold",
}


def split_arguments(ad: Mapping[str, Any]) -> list[str]:
    """argv from `Arguments` (new syntax) or `Args` (old, whitespace separated)."""
    if isinstance(ad.get("Arguments"), str):
        return split_v2(ad["Arguments"])
    if isinstance(ad.get("Args"), str):
        args: str = ad["Args"]
        return args.split()
    return []


def split_v2(text: str) -> list[str]:
    """Split HTCondor's new (V2) argument syntax: whitespace separates, 'single quotes' group, '' is a quote.

    Not shlex: a double quote is an ordinary character here (the submit file doubles it, the
    ad holds it once), and a backslash escapes nothing.
    """
    args: list[str] = []
    current: list[str] = []
    quoted = started = False
    i = 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "'" and text[i + 1:i + 2] == "'":
                current.append("'")
                i += 1
            elif c == "'":
                quoted = False
            else:
                current.append(c)
        elif c == "'":
            quoted = started = True
        elif c.isspace():
            if current or started:
                args.append("".join(current))
            current, started = [], False
        else:
            current.append(c)
        i += 1
    if current or started:
        args.append("".join(current))
    return args


def parse_environment(value: Any) -> dict[str, str]:
    """`Environment` in HTCondor's new syntax ("A=1 B='two words'")."""
    env: dict[str, str] = {}
    if not isinstance(value, str) or not value.strip():
        return env
    for token in split_v2(value):
        name, eq, val = token.partition("=")
        if eq and name:
            env[name] = val
    return env


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _resolve(base: str, path: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def proc_ad(
    commands: Mapping[str, str], *, cluster: int, proc: int, cwd: str, owner: str, qdate: int,
    spool_iwd: str | Path,
) -> Ad:
    """The ad of one proc right after a spooled submit."""
    # condor_submit reads a command whose value expands to nothing as one not given (submit_param), and
    # an empty My.X or +X as X = undefined (SetForcedAttributes). Several queue statements made one give
    # such values to the procs of the statements before a command (submitdesc/flatten.py).
    commands = {k: v for k, v in commands.items() if v.strip() or attr_name(k) is not None}
    universe = commands.get("universe", "vanilla").strip().lower()
    if universe not in UNIVERSES:
        raise ScheddError(
            ErrorKind.REJECTED,
            f"Failed to create job ad, errmsg=Submit:-1:I don't know about the '{universe}' universe.",
        )
    executable = commands.get("executable", "").strip()
    if not executable:
        raise ScheddError(ErrorKind.REJECTED,
                          "Failed to create job ad, errmsg=Submit:-1:No 'executable' parameter was provided")
    iwd = _resolve(cwd, commands.get("initialdir", "").strip() or ".")
    host = socket.gethostname()
    ad: Ad = {
        "MyType": "Job",
        "TargetType": "Machine",
        "ClusterId": cluster,
        "ProcId": proc,
        "GlobalJobId": f"{host}#{cluster}.{proc}#{qdate}",
        "Owner": owner,
        "User": f"{owner}@{host}",
        "QDate": qdate,
        "JobUniverse": UNIVERSES[universe],
        "JobStatus": int(JobStatus.HELD),
        "InitialJobStatus": int(JobStatus.HELD),
        "HoldReason": SPOOL_HOLD_REASON,
        "HoldReasonCode": int(HoldCode.SPOOLING_INPUT),
        "EnteredCurrentStatus": qdate,
        "ExitBySignal": False,
        "ExitStatus": 0,
        "NumJobStarts": 0,
        "JobRunCount": 0,
        "NumShadowStarts": 0,
        "NumJobCompletions": 0,
        "NumHolds": 0,
        "RemoteWallClockTime": 0.0,
        "RemoteUserCpu": 0.0,
        "RemoteSysCpu": 0.0,
        "Cmd": os.path.basename(executable),
        "SUBMIT_Cmd": _resolve(cwd, executable),
        "Iwd": str(spool_iwd),
        "SUBMIT_Iwd": iwd,
        "In": commands.get("input", "").strip() or os.devnull,
        "Out": commands.get("output", "").strip() or os.devnull,
        "Err": commands.get("error", "").strip() or os.devnull,
        "TransferOutputRemaps": None,
        "JobPrio": 0,
        "RequestCpus": 1,
        "RequestMemory": 128,
        "RequestDisk": 1024,
        "ShouldTransferFiles": "YES",
        "WhenToTransferOutput": "ON_EXIT",
        "Environment": "",
    }
    arguments = commands.get("arguments", "").strip()
    if arguments.startswith('"') and arguments.endswith('"') and len(arguments) >= 2:
        ad["Arguments"] = arguments[1:-1].replace('""', '"')
    elif arguments:
        ad["Args"] = arguments
    if "environment" in commands:
        env = commands["environment"].strip()
        # New syntax is wrapped in double quotes, with "" for a literal quote inside.
        ad["Environment"] = env[1:-1].replace('""', '"') if len(env) >= 2 and env[0] == env[-1] == '"' else env
    remaps = commands.get("transfer_output_remaps", "").strip()
    if remaps:
        ad["SUBMIT_TransferOutputRemaps"] = _unquote(remaps)
    for key, value in commands.items():
        if key in STRING_COMMANDS:
            ad[STRING_COMMANDS[key]] = value.strip()
        elif key == "notification":
            if value.strip().lower() not in NOTIFICATION:
                raise ScheddError(ErrorKind.REJECTED, f"Notification must be 'Never', 'Always', 'Complete', or "
                                  f"'Error', not {value.strip()!r}")
            ad["JobNotification"] = NOTIFICATION[value.strip().lower()]
        elif key in REQUEST_UNITS:
            ad[EXPR_COMMANDS[key]] = request_size(value, key)
        elif key in EXPR_COMMANDS:
            if key == "periodic_hold_reason" and not value.strip().startswith('"'):
                value = f'"{value.strip()}"'
            ad[EXPR_COMMANDS[key]] = _literal_or_expr(value, key)
        else:
            name = attr_name(key)
            if name is not None:
                ad[name] = _literal_or_expr(value.strip() or "undefined", key)
    for attr in ("TransferInput", "TransferOutput"):
        if attr in ad and not ad[attr]:
            del ad[attr]
    if ad.get("TransferExecutable") is False:
        # As a schedd stores it: the executable stays where it is on the access point, named in full.
        ad["Cmd"] = ad.pop("SUBMIT_Cmd")
    return ad


# condor_submit reads a size with a unit (K, M, G, T, maybe followed by b or B, any case, spaces
# before the unit) and stores it in the attribute's own unit, rounded up: MB for RequestMemory, KB
# for RequestDisk; a bare number is already in that unit. `request_memory = 1GB` is RequestMemory =
# 1024. As its parse_int64_bytes (condor_utils), a fraction counts to three digits, and anything
# else (an expression, "1B") is left to the ClassAd parser.
REQUEST_UNITS = {"request_memory": 1 << 20, "request_disk": 1 << 10}
_SIZE = re.compile(r"\s*([-+]?\d*)(?:\.(\d*))?\s*(?:([KMGT])[bB]?)?\s*", re.IGNORECASE)
_UNIT_BYTES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def request_size(value: str, key: str) -> Any:
    """A request_memory or request_disk value as the schedd stores it; an expression stays one."""
    m = _SIZE.fullmatch(value)
    if m is None or not (m[1].lstrip("+-") or (m[1] == "" and m[2] is not None)):
        return _literal_or_expr(value, key)
    base = REQUEST_UNITS[key]
    whole, fraction = int(m[1] or "0"), int((m[2] or "")[:3].ljust(3, "0")) / 1000
    mult = _UNIT_BYTES[m[3].upper()] if m[3] else base
    scaled = int((whole + fraction) * mult + base - 1)
    return scaled // base if scaled >= 0 else -(-scaled // base)  # C's division, toward zero


def _literal_or_expr(value: str, key: str) -> Any:
    try:
        return parse_value(value)
    except ScheddError:
        raise ScheddError(
            ErrorKind.REJECTED, f"Failed to create job ad, errmsg=Submit:-1:Parse error in expression: {key} = {value}"
        ) from None


def split_cluster(ads: list[Ad]) -> tuple[Ad, list[Ad]]:
    """Split full proc ads into the shared cluster ad and per-proc differences."""
    first = ads[0]
    shared = {
        k: v for k, v in first.items()
        if k not in ("ProcId", "GlobalJobId", "Iwd") and all(k in a and a[k] == v for a in ads[1:])
    }
    procs = [{k: v for k, v in a.items() if k not in shared or shared[k] != v} for a in ads]
    return shared, procs
