"""Unit tests for rsubd.submitdesc: parsing, macro expansion and rendering of submit files."""

from __future__ import annotations

from pathlib import Path

import pytest

from rsubd.submitdesc import (
    QueueSpec,
    SubmitDescription,
    SubmitError,
    attr_name,
    expand,
    parse,
    render,
)


def _parse(text: str, cwd: Path | str = "/nonexistent") -> SubmitDescription:
    return parse(text, cwd=str(cwd))


# ---------------------------------------------------------------- commands


def test_commands_keep_order_case_and_strip_whitespace() -> None:
    desc = _parse(
        'Executable   =   /bin/echo  \nArguments=a b  c\n+Foo = "x"\nMy.RETRIEVED = false\nqueue\n'
    )
    assert desc.commands == (
        ("Executable", "/bin/echo"),
        ("Arguments", "a b  c"),
        ("+Foo", '"x"'),
        ("My.RETRIEVED", "false"),
    )
    assert desc.queue == QueueSpec(count=1, vars=(), items=())


def test_comments_and_blank_lines_are_ignored() -> None:
    text = "# leading comment\n\n   # indented comment\nexecutable = a # not a comment\n\nqueue\n# trailing\n\n"
    desc = _parse(text)
    assert desc.commands == (("executable", "a # not a comment"),)


def test_continuation_lines_are_joined_without_backslash() -> None:
    desc = _parse("arguments = one \\\n two \\  \nthree\noutput = o\nqueue\n")
    # Leading blanks of continuation lines go, as in condor_submit; a backslash may be
    # followed by trailing blanks.
    assert desc.commands == (("arguments", "one two three"), ("output", "o"))


@pytest.mark.parametrize(
    ("text", "commands"),
    [
        ("v = C:\\x\\\n\nw = 1\n", (("v", "C:\\x"), ("w", "1"))),
        # condor_submit re-checks the joined text, so "\\\\" continues past the blank line.
        ("v = C:\\x\\\\\n\nw = 1\n", (("v", "C:\\xw = 1"),)),
        ("v = a\\\\\n\n\nw = 1\n", (("v", "a"), ("w", "1"))),
    ],
)
def test_continuation_matches_condor_submit(
    text: str, commands: tuple[tuple[str, str], ...]
) -> None:
    assert _parse(text + "queue\n").commands == commands


def test_continuation_does_not_apply_to_comment_lines() -> None:
    desc = _parse("# commented out \\\noutput = o\nqueue\n")
    assert desc.commands == (("output", "o"),)


def test_empty_value_and_value_with_equals() -> None:
    desc = _parse("environment =\nrequirements = Target.X == 3\nqueue\n")
    assert desc.commands == (("environment", ""), ("requirements", "Target.X == 3"))


def test_crlf_line_endings() -> None:
    desc = _parse("output = o\r\nqueue 2\r\n")
    assert desc.commands == (("output", "o"),)
    assert desc.queue.count == 2


# ---------------------------------------------------------------- get / attr_name / with_commands


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("My.Foo", "Foo"),
        ("+Foo", "Foo"),
        ("MY.foo", "foo"),
        ("my.Bar_2", "Bar_2"),
        ("output", None),
        ("Executable", None),
        ("+", None),
    ],
)
def test_attr_name(key: str, expected: str | None) -> None:
    assert attr_name(key) == expected


def test_get_is_case_insensitive_and_treats_my_and_plus_alike() -> None:
    desc = _parse("Output = a\n+Foo = 1\noutput = b\nMY.foo = 2\nqueue\n")
    assert desc.get("OUTPUT") == "b"
    assert desc.get("+FOO") == "2"
    assert desc.get("My.Foo") == "2"
    assert desc.get("foo") is None
    assert desc.get("error") is None


def test_with_commands_appends_and_replaces() -> None:
    desc = _parse("Output = a\n+Foo = 1\nerror = e\nqueue 3\n")
    new = desc.with_commands([("My.FOO", "2"), ("OUTPUT", "b"), ("My.RETRIEVED", "false")])
    assert new.commands == (
        ("error", "e"),
        ("My.FOO", "2"),
        ("OUTPUT", "b"),
        ("My.RETRIEVED", "false"),
    )
    assert new.queue == desc.queue
    assert desc.get("output") == "a"  # original untouched
    assert new.get("+foo") == "2"


def test_with_commands_later_extra_replaces_earlier_extra() -> None:
    desc = _parse("queue\n").with_commands([("+A", "1"), ("my.a", "2")])
    assert desc.commands == (("my.a", "2"),)


@pytest.mark.parametrize("bad", [("bad key", "1"), ("", "1"), ("ok", "two\nlines")])
def test_with_commands_rejects_unrenderable(bad: tuple[str, str]) -> None:
    with pytest.raises(SubmitError):
        _parse("queue\n").with_commands([bad])


# ---------------------------------------------------------------- queue forms


@pytest.mark.parametrize(
    ("line", "count"),
    [("queue", 1), ("QUEUE", 1), ("queue 1", 1), ("queue 7", 7), ("Queue   12  ", 12)],
)
def test_queue_count(line: str, count: int) -> None:
    desc = _parse(f"executable = x\n{line}\n")
    assert desc.queue == QueueSpec(count, (), ())
    assert desc.num_procs() == count


def test_queue_from_relative_file(tmp_path: Path) -> None:
    # Every line is an item, a blank one too (its job has an empty Item) and a "#" one: the bindings'
    # Submit("queue from items.txt").itemdata gives "alpha", "", "beta gamma", "", "delta" (25.14).
    (tmp_path / "items.txt").write_text("alpha\n\n  beta gamma  \n\ndelta\n# not a comment\n")
    desc = _parse("queue from items.txt\n", tmp_path)
    assert desc.queue.vars == ("Item",)
    assert desc.queue.items == (("alpha",), ("",), ("beta gamma",), ("",), ("delta",), ("# not a comment",))
    assert desc.num_procs() == 6
    # Lines end at "\n" (a Windows "\r\n" too), not at the other marks str.splitlines takes for line ends.
    (tmp_path / "items.txt").write_text("a\x0cb\r\nc\x1ed\n", newline="")
    assert _parse("queue from items.txt\n", tmp_path).queue.items == (("a\x0cb",), ("c\x1ed",))


def test_queue_from_absolute_file_ignores_cwd(tmp_path: Path) -> None:
    f = tmp_path / "list"
    f.write_text("1\n2\n")
    desc = _parse(f"queue 2 n from {f}\n", "/somewhere/else")
    assert desc.queue == QueueSpec(2, ("n",), (("1",), ("2",)))
    assert desc.num_procs() == 4


def test_queue_from_inline_block_with_several_vars() -> None:
    text = "queue a, b c from (\n  x1, y1\n\n x2 y2 with spaces, and commas \n x3\n)\n# done\n"
    desc = _parse(text)
    assert desc.queue.vars == ("a", "b", "c")
    assert desc.queue.items == (  # the blank line is an item too (the bindings' itemdata, 25.14)
        ("x1", "y1", ""),
        ("", "", ""),
        ("x2", "y2", "with spaces, and commas"),
        ("x3", "", ""),
    )


def test_queue_from_inline_block_reads_lines_like_submit_lines() -> None:
    desc = _parse("queue from (\n  x \\\n  y\n # comment\n z\n)\n")
    assert desc.queue.items == (("x y",), ("z",))


def test_queue_from_file_keeps_hash_lines(tmp_path: Path) -> None:
    (tmp_path / "items").write_text("# not a comment in item files\nb\n")
    assert _parse("queue from items\n", tmp_path).queue.items == (
        ("# not a comment in item files",),
        ("b",),
    )


@pytest.mark.parametrize(
    "line",
    [
        "queue item in (a, b, c)",
        "queue item in a, b, c",
        "queue item in a b   c",
        "queue item in (a,b c)",
    ],
)
def test_queue_in_list(line: str) -> None:
    desc = _parse(line + "\n")
    assert desc.queue == QueueSpec(1, ("item",), (("a",), ("b",), ("c",)))


def test_queue_in_list_spanning_lines() -> None:
    desc = _parse("queue 2 in (\n  a,\n  b\n  c )\n\n")
    assert desc.queue == QueueSpec(2, ("Item",), (("a",), ("b",), ("c",)))
    assert desc.num_procs() == 6


def test_queue_matching(tmp_path: Path) -> None:
    for name in ("b.dat", "a.dat", "c.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "d.dat").mkdir()
    assert _parse("queue f matching *.dat\n", tmp_path).queue.items == (
        ("a.dat",),
        ("b.dat",),
        ("d.dat/",),
    )
    assert _parse("queue matching files *.dat\n", tmp_path).queue == QueueSpec(
        1, ("Item",), (("a.dat",), ("b.dat",))
    )
    assert _parse("queue 3 matching dirs *\n", tmp_path).queue == QueueSpec(
        3, ("Item",), (("d.dat/",),)
    )
    # Pattern order is kept and duplicates dropped, as condor_submit does.
    assert _parse("queue matching *.txt a.* *.dat\n", tmp_path).queue.items == (
        ("c.txt",),
        ("a.dat",),
        ("b.dat",),
        ("d.dat/",),
    )


# ---------------------------------------------------------------- errors


def _error(text: str, cwd: Path | str = "/nonexistent") -> str:
    with pytest.raises(SubmitError) as info:
        parse(text, cwd=str(cwd))
    return str(info.value)


def test_error_no_queue() -> None:
    assert _error("executable = x\n").startswith("no queue statement: ")
    assert _error("").startswith("no queue statement: ")


# ---------------------------------------------------------------- several queue statements


def _procs(text: str, cluster: int = 7) -> list[dict[str, str]]:
    """What the description makes, read back from the text rsub would send (as the schedd reads it)."""
    sent = render(parse(text, cwd="/nonexistent"))
    return expand(parse(sent, cwd="/nonexistent"), cluster=cluster)


def test_several_queue_statements_make_one_cluster_numbered_on() -> None:
    # The condor_submit -dry-run (HTCondor 25.13): procs 0, 1, 2 with args a, a, b.
    procs = _procs("executable = x\narguments = a\nN = 2\nqueue $(N)\narguments = b\nqueue 1\n")
    assert [p["arguments"] for p in procs] == ["a", "a", "b"]
    assert {p["executable"] for p in procs} == {"x"}


def test_each_queue_statement_keeps_its_own_step_row_and_items() -> None:
    text = ("executable = x\noutput = o.$(Process).$(Step).$(Row)\nqueue 2\n"
            "arguments = -n $(n), with blanks\nqueue n in (p, q)\n")
    procs = _procs(text)
    assert [p["output"] for p in procs] == ["o.0.0.0", "o.1.1.0", "o.2.0.0", "o.3.0.1"]
    assert [p["arguments"] for p in procs] == ["", "", "-n p, with blanks", "-n q, with blanks"]


def test_what_only_the_schedd_knows_is_left_for_it() -> None:
    text = "executable = x\nlog = $(Cluster).log\narguments = $INT(n)\nn = 1\nqueue\nn = 2\nqueue\n"
    sent = render(parse(text, cwd="/nonexistent"))
    assert "log = $(ClusterId).log" in sent  # the same for every proc: one plain command
    assert "$INT(n)" in sent and "$(n)" not in sent.replace("$INT(n)", "")
    assert [p["log"] for p in expand(parse(sent, cwd="/"), cluster=41)] == ["41.log", "41.log"]


def test_one_queue_statement_is_sent_as_written() -> None:
    text = "executable = x\narguments = $(Process)\nqueue 3\n"
    assert render(parse(text, cwd="/")) == text


def test_queue_count_from_a_macro() -> None:
    assert parse("N = 4\nexecutable = x\nqueue $(N)\n", cwd="/").num_procs() == 4
    assert _error("executable = x\nqueue $(N)\n").startswith("line 2: ")  # an undefined count


def test_error_commands_after_the_last_queue_make_no_job() -> None:
    msg = _error("executable = x\nqueue\n\narguments = late\n")
    assert msg == "line 4: commands after the last queue statement make no job: arguments = late"


def test_error_command_after_queue() -> None:
    assert _error("queue\noutput = o\n").startswith("line 2: ")


def test_error_queue_zero() -> None:
    assert _error("a = 1\nqueue 0\n").startswith("line 2: ")
    assert _error("queue 0 from (\nx\n)\n").startswith("line 1: ")


@pytest.mark.parametrize(
    "line",
    [
        "queue foo",
        "queue 1x",
        "queue 3 x",
        "queue 2 from",
        "queue item in ()",
        "queue a a from (\nx\n)",
    ],
)
def test_error_bad_queue_statement(line: str) -> None:
    assert _error("a = 1\n" + line + "\n").startswith("line 2: ")


def test_error_from_inline_items_on_same_line() -> None:
    assert _error("queue from (a b c)\n").startswith("line 1: ")


def test_error_unclosed_item_lists() -> None:
    assert "never closed" in _error("queue from (\na\nb\n")
    assert "never closed" in _error("queue in (a,\nb\n")


def test_error_missing_item_file(tmp_path: Path) -> None:
    msg = _error("x = 1\nqueue from missing.txt\n", tmp_path)
    assert msg.startswith("line 2: ")
    assert str(tmp_path / "missing.txt") in msg
    assert "No such file or directory" in msg


def test_error_empty_item_file_and_no_matches(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("")
    assert "no items" in _error("queue from empty\n", tmp_path)
    (tmp_path / "blank").write_text("\n\n")  # two blank lines: two items, each job's Item empty
    assert _parse("queue from blank\n", tmp_path).queue.items == (("",), ("",))
    assert "no items" in _error("queue matching *.none\n", tmp_path)


@pytest.mark.parametrize("word", ["if", "elif", "else", "endif", "include", "use"])
def test_error_unsupported_keywords(word: str) -> None:
    line = {
        "if": "if $(X)",
        "elif": "elif defined Y",
        "include": "include : other.sub",
        "use": "use feature:GPUs",
    }.get(word, word)
    msg = _error(f"a = 1\n# c\n{line}\nqueue\n")
    assert msg == f"line 3: '{word}' is not supported by rsub"


def test_keyword_prefixed_commands_are_plain_commands() -> None:
    desc = _parse("use_x509userproxy = true\ninclude = 1\nqueue_x = 2\nqueue\n")
    assert [k for k, _ in desc.commands] == ["use_x509userproxy", "include", "queue_x"]


def test_error_syntax() -> None:
    msg = _error("a = 1\n\nfoo bar\nqueue\n")
    assert msg == "line 3: syntax error: expected 'key = value' or a queue statement: foo bar"
    assert _error("foo bar = 3\nqueue\n").startswith("line 1: syntax error: ")
    assert _error("key: value\nqueue\n").startswith("line 1: syntax error: ")
    assert _error("x = 1\n+Foo.Bar = 1\nqueue\n").startswith("line 2: syntax error: ")
    assert _error("My.a.b = 1\nqueue\n").startswith("line 1: syntax error: ")


def test_error_empty_key() -> None:
    msg = _error("a = 1\n = 3\nqueue\n")
    assert msg.startswith("line 2: ")
    assert "empty key" in msg


def test_error_line_number_of_continued_line_is_its_first_line() -> None:
    assert _error("a = 1 \\\n 2\nfoo \\\nbar\nqueue\n").startswith("line 3: syntax error")


# ---------------------------------------------------------------- expand


def test_expand_item_vars_procid_and_order() -> None:
    desc = _parse(
        "arguments = $(a) $(B) $(ProcId) $(Step) $(ItemIndex) $(Row)\nqueue 2 a, b from (\nx 1\ny 2\n)\n"
    )
    procs = expand(desc, cluster=5)
    assert [p["arguments"] for p in procs] == [
        "x 1 0 0 0 0",
        "x 1 1 1 0 0",
        "y 2 2 0 1 1",
        "y 2 3 1 1 1",
    ]


def test_expand_without_items_gives_count_procs() -> None:
    procs = expand(_parse("output = out.$(Cluster).$(Process)\nqueue 3\n"), cluster=42)
    assert [p["output"] for p in procs] == ["out.42.0", "out.42.1", "out.42.2"]


def test_expand_predefined_macros() -> None:
    desc = _parse("x = $(ClusterId)|$(cluster)|$(PROCID)|$(ItemIndex)|$(node)|$(Item)\nqueue\n")
    assert expand(desc, cluster=9) == [{"x": "9|9|0|0||"}]


def test_expand_keys_are_normalised_and_later_duplicates_win() -> None:
    desc = _parse('Output = a\n+Foo = "$(output)"\nOUTPUT = b\nmy.BAR = 1\nMY.Bar = 2\nqueue\n')
    assert expand(desc, cluster=1) == [{"output": "b", "My.Foo": '"b"', "My.Bar": "2"}]


def test_expand_recursive_and_defaults() -> None:
    text = (
        "base = /data\n"
        "dir = $(base)/$(sub:default_sub)\n"
        "input = $(dir)/$(name:$(fallback:f.txt))\n"
        "other = $(undefined)x$(empty:unused)\n"
        "empty =\n"
        "queue\n"
    )
    (proc,) = expand(_parse(text), cluster=1)
    assert proc["input"] == "/data/default_sub/f.txt"
    assert proc["other"] == "x"


def test_expand_item_vars_override_commands_and_are_expanded() -> None:
    desc = _parse("item = cmd\nx = X\nargs = $(item)\nqueue in ($(Cluster), $(x)b)\n")
    assert [p["args"] for p in expand(desc, cluster=3)] == ["3", "Xb"]


def test_expand_item_self_reference_is_a_cycle() -> None:
    with pytest.raises(SubmitError, match=r"\$\(item\)"):
        expand(_parse("args = $(item)\nqueue in $(item)\n"), cluster=1)


def test_expand_custom_attributes_are_not_macros() -> None:
    desc = _parse("+Foo = 1\nx = [$(Foo)][$(My.Foo)]\nqueue\n")
    assert expand(desc, cluster=1)[0]["x"] == "[][]"


def test_expand_cycle_is_an_error() -> None:
    desc = _parse("a = $(b)\nb = x$(c)\nc = $(A)\nqueue\n")
    with pytest.raises(SubmitError, match=r"cycle.*\$\(a\)"):
        expand(desc, cluster=1)


def test_expand_self_reference_is_an_error() -> None:
    with pytest.raises(SubmitError, match=r"\$\(args\)"):
        expand(_parse("args = $(args) more\nqueue\n"), cluster=1)


def test_expand_depth_limit() -> None:
    chain = "".join(f"m{i} = $(m{i + 1})\n" for i in range(40)) + "m40 = end\n"
    with pytest.raises(SubmitError, match=r"\$\(m\d+\)"):
        expand(_parse(chain + "queue\n"), cluster=1)
    ok = "".join(f"m{i} = $(m{i + 1})\n" for i in range(20)) + "m20 = end\n"
    assert expand(_parse(ok + "queue\n"), cluster=1)[0]["m0"] == "end"


def test_expand_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSUB_TEST_VAR", "hello")
    monkeypatch.delenv("RSUB_TEST_UNSET", raising=False)
    desc = _parse("x = $ENV(RSUB_TEST_VAR)-$ENV(RSUB_TEST_UNSET)-\nqueue\n")
    assert expand(desc, cluster=1)[0]["x"] == "hello--"


def test_expand_leaves_match_time_macros_alone() -> None:
    text = '+A = "$$(OpSys)"\nb = $$([ TARGET.Memory * (2 + $(x)) ]) $(x)\nx = 1\nc = $$ $5 $(\nqueue\n'
    (proc,) = expand(_parse(text), cluster=1)
    assert proc["My.A"] == '"$$(OpSys)"'
    assert proc["b"] == "$$([ TARGET.Memory * (2 + $(x)) ]) 1"
    assert proc["c"] == "$$ $5 $("


def test_expand_file_functions() -> None:
    text = "f = /data/in/file.tar.gz\nx = $Fn(f)|$Fnx(f)|$Fp(f)|$Fd(f)|$Fx(f)|$Fn(item)|$INT(f)|$(dirname f)\n"
    (proc,) = expand(_parse(text + "queue item in rel.txt\n"), cluster=1)
    # $Fd is the last directory only, as condor_submit computes it.
    assert proc["x"] == "file.tar|file.tar.gz|/data/in/|in/|.gz|rel||"


# ---------------------------------------------------------------- render


_ROUND_TRIP = [
    "executable = /bin/true\nqueue\n",
    'Executable = a\nArguments = -x  "quoted arg" # hash\n+Foo = "bar"\nMy.RETRIEVED = false\nqueue 5\n',
    "x =\ny = = z\nqueue 3 a, b, c from (\n  one, two three, four\n,b\nsolo\n)\n",
    "path = C:\\dir\\\\\n\nnext = 1\nqueue item in a b c\n",
    "path = C:\\dir\\\n\nnext = 1\nqueue item in x\n",
    "args = $(item) $$(OpSys) $ENV(HOME)\nqueue 2 item in (\n a,\n b )\n",
    "queue from (\n# not a comment\nC:\\ends\\with\\\n  )x(\n)\n",
]


@pytest.mark.parametrize("text", _ROUND_TRIP)
def test_render_round_trip(text: str, tmp_path: Path) -> None:
    desc = _parse(text)
    rendered = render(desc)
    assert parse(rendered, cwd=str(tmp_path)) == desc
    assert render(parse(rendered, cwd="/")) == rendered


def test_render_round_trip_from_file_and_matching_inlines_items(tmp_path: Path) -> None:
    (tmp_path / "items").write_text("a.dat, 1\nb.dat, 2, extra words\n")
    (tmp_path / "a.dat").write_text("")
    for text in ("queue 2 f, n from items\n", "queue matching *.dat\n"):
        desc = _parse("output = o\n" + text, tmp_path)
        rendered = render(desc)
        assert "from (\n" in rendered
        assert "items" not in rendered and "*" not in rendered
        assert parse(rendered, cwd="/elsewhere") == desc


def test_values_ending_in_backslash_cannot_be_written() -> None:
    with pytest.raises(SubmitError):
        _parse("queue\n").with_commands([("path", "C:\\x\\")])
    with pytest.raises(SubmitError):
        render(SubmitDescription((("path", "C:\\x\\"),), QueueSpec()))


def test_render_is_canonical() -> None:
    desc = SubmitDescription((("a", "1"),), QueueSpec(2, ("x", "y"), (("1", "p q"), ("2", ""))))
    assert render(desc) == "a = 1\nqueue 2 x, y from (\n1, p q\n2, \n)\n"


def test_render_writes_fields_with_blanks_and_commas_unit_separated() -> None:
    desc = SubmitDescription((("a", "$(x)"),), QueueSpec(1, ("x", "y"), (("a b", "c, d"), ("e", "f"))))
    text = render(desc)
    assert "a b\x1fc, d\ne\x1ff\n" in text
    assert parse(text, cwd="/") == desc


@pytest.mark.parametrize(
    "desc",
    [
        SubmitDescription((("a", " padded "),), QueueSpec()),
        SubmitDescription((("bad key", "1"),), QueueSpec()),
        SubmitDescription((), QueueSpec(0)),
        SubmitDescription((), QueueSpec(1, ("x",), ())),
        SubmitDescription((), QueueSpec(1, ("x",), ((")",),))),
        SubmitDescription((), QueueSpec(1, ("x",), (("#a",),))),
        SubmitDescription((), QueueSpec(1, ("x",), (("C:\\a\\",),))),
    ],
)
def test_render_refuses_unrepresentable(desc: SubmitDescription) -> None:
    with pytest.raises(SubmitError):
        render(desc)


def test_render_writes_an_empty_item_as_a_blank_line_that_parses_back() -> None:
    desc = SubmitDescription((("arguments", "$(x)"),), QueueSpec(1, ("x", "y"), (("a", "b"), ("", ""), ("c", ""))))
    text = render(desc)
    assert parse(text, cwd="/") == desc
