"""HTCondor submit descriptions without the htcondor bindings: parse, expand, render."""

from rsubd.submitdesc.expand import expand
from rsubd.submitdesc.model import QueueSpec, SubmitDescription, SubmitError, attr_name
from rsubd.submitdesc.parse import parse, parse_remaps
from rsubd.submitdesc.render import render

__all__ = ["QueueSpec", "SubmitDescription", "SubmitError", "attr_name", "expand", "parse", "parse_remaps", "render"]
