"""What gets embedded: template escapes and optional sections, chat roles, the spec's normal form in a store,
and `tsds pool preview`, which shows the exact texts."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tsds.cli import app
from tsds.errors import InputError, ParameterError
from tsds.io.readers import ReadStats, TextSpec, decode_escapes, iter_batches, read_texts
from tsds.io.readers import jsonl as _jsonl
from tsds.io.readers import limits as _limits
from tsds.store import PoolStore, build_store
from tsds.store.provenance import text_hash

ALPACA = [
    {"instruction": "Give three tips.", "input": "", "output": "Eat, sleep, move."},
    {"instruction": "Translate.", "input": "Bonjour", "output": "Hello"},
    {"instruction": "Name a colour.", "input": "  ", "output": "Blue"},
    {"instruction": "Add.", "output": "4"},                                  # no input at all
    {"instruction": "Count.", "input": None, "output": "3"},
]
ALPACA_TEMPLATE = "{instruction}[[\n\nInput: {input}]]\n\n{output}"
ALPACA_TEXTS = [
    "Give three tips.\n\nEat, sleep, move.",
    "Translate.\n\nInput: Bonjour\n\nHello",
    "Name a colour.\n\nBlue",
    "Add.\n\n4",
    "Count.\n\n3",
]
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CHAT = [
    {"messages": [SYSTEM, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
    {"messages": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you."}]},
    {"messages": [SYSTEM, {"role": "tool", "content": "{}"}, {"role": "user", "content": "Weather?"}]},
]


def _write(path: Path, rows, *, array=False) -> Path:
    text = json.dumps(rows) if array else "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")
    return path


def _block_and_row_texts(path, spec, monkeypatch):
    """The texts read with pyarrow's block path (asserted to have run) and those of `TextSpec.extract`."""
    runs = []
    real = _jsonl._arrow_run

    def counting(*a):
        run = real(*a)
        runs.append(run is not None)
        return run

    monkeypatch.setattr(_jsonl, "_arrow_run", counting)
    fast = read_texts(path, spec)[0]
    assert runs and all(runs)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return fast, [spec.extract(r) for r in rows]


def test_alpaca_empty_input_vanishes_with_its_section(tmp_path, monkeypatch):
    spec = TextSpec(template=ALPACA_TEMPLATE)
    assert read_texts(_write(tmp_path / "a.json", ALPACA, array=True), spec)[0] == ALPACA_TEXTS
    fast, slow = _block_and_row_texts(_write(tmp_path / "a.jsonl", ALPACA * 50), spec, monkeypatch)
    assert fast == slow == ALPACA_TEXTS * 50


def test_a_required_field_stays_required_and_an_optional_one_must_still_be_text():
    spec = TextSpec(template=ALPACA_TEMPLATE)
    with pytest.raises(ValueError, match="missing field 'output' for the template"):
        spec.extract({"instruction": "x", "input": "y"})
    with pytest.raises(ValueError, match="field 'input' is list, not a string or number"):
        spec.extract({"instruction": "x", "input": ["y"], "output": "z"})
    both = TextSpec(template="{a}[[ ({b}, {c})]]")
    assert both.extract({"a": "A", "b": "B", "c": ""}) == "A"
    assert both.extract({"a": "A", "b": "B", "c": 0}) == "A (B, 0)"


@pytest.mark.parametrize("template,message", [
    ("{text.__class__}", "plain field name"), ("[[{text.__class__}]]", "plain field name"),
    ("{a}[[x[[{b}]]]]", "do not nest"), ("{a}[[{b}", "never closed"), ("{a}]]", "closes no section"),
    ("{a}[[ - ]]", "names no field"), ("[[{a}]]{{}}", None)])
def test_template_sections_are_checked_and_stay_safe(template, message):
    if message is None:
        assert TextSpec(template=template).extract({"a": "x"}) == "x{}"
        return
    with pytest.raises(ParameterError, match=message):
        TextSpec(template=template)


def test_escapes_are_decoded_once_and_unknown_ones_refused():
    assert decode_escapes(r"{a}\n{b}\t\\n") == "{a}\n{b}\t\\n"
    for bad in (r"{a}\x", "{a}\\"):
        with pytest.raises(ParameterError, match="unknown escape"):
            decode_escapes(bad)


def test_chat_embeds_user_and_assistant_turns_by_default(tmp_path, monkeypatch):
    path = _write(tmp_path / "chat.jsonl", CHAT * 40)
    default = TextSpec(messages_field="messages")
    fast, slow = _block_and_row_texts(path, default, monkeypatch)
    assert fast == slow and fast[:3] == ["user: Hi\nassistant: Hello!", "user: Bye\nassistant: See you.",
                                         "user: Weather?"]
    every = TextSpec(messages_field="messages", roles=None)
    fast, slow = _block_and_row_texts(path, every, monkeypatch)
    assert fast == slow and fast[0] == "system: You are a helpful assistant.\nuser: Hi\nassistant: Hello!"
    assistant = TextSpec(messages_field="messages", roles=("assistant",))
    stats = ReadStats()
    texts = [t for b in iter_batches(path, assistant, on_bad_row="skip", stats=stats) for t in b.texts]
    assert texts[:2] == ["assistant: Hello!", "assistant: See you."] and len(texts) == 80
    assert stats.skipped == 40
    assert stats.bad_examples[0] == f"{path}:3: field 'messages' has no messages of role assistant"


def test_roles_apply_to_chat_only():
    with pytest.raises(ParameterError, match="chat messages only"):
        TextSpec(text_field="text", roles=("user",))
    with pytest.raises(ParameterError, match="list of role names"):
        TextSpec(messages_field="m", roles="user")


def test_text_field_text_and_the_default_are_one_spec_in_a_store(tmp_path, static_embedder):
    pool = _write(tmp_path / "p.jsonl", [{"text": f"row {i} about food"} for i in range(30)])
    assert TextSpec() == TextSpec(text_field="text")
    assert TextSpec().to_dict() == TextSpec(text_field="text").to_dict()
    built = build_store([pool], tmp_path / "s", embedder=static_embedder, shard_rows=10)
    recorded = json.loads((tmp_path / "s" / "store.json").read_text())["text_spec"]
    assert recorded == {"text_field": "text", "template": None, "messages_field": None, "roles": None,
                        "max_chars": 200_000}
    again = build_store([pool], tmp_path / "s", embedder=static_embedder, shard_rows=10,
                        spec=TextSpec(text_field="text"))
    assert again.n_rows == built.n_rows == 30 and again.meta["last_build"]["embedded_shards"] == 0


def test_cli_template_is_decoded_and_recorded_with_the_embedded_texts(tmp_path):
    pool = _write(tmp_path / "alpaca.json", ALPACA, array=True)
    result = CliRunner().invoke(app, ["pool", "build", str(pool), "--out", str(tmp_path / "s"), "-q",
                                      "--template", r"{instruction}[[\n\nInput: {input}]]\n\n{output}"])
    assert result.exit_code == 0, result.output
    store = PoolStore(tmp_path / "s")
    assert store.meta["text_spec"]["template"] == ALPACA_TEMPLATE      # real newlines, not backslash-n
    hashes, known = store.text_hashes(range(len(ALPACA)))
    assert known.all() and hashes.tolist() == [text_hash(t) for t in ALPACA_TEXTS]


def test_a_chat_store_from_before_roles_keeps_every_turn(tmp_path, static_embedder):
    """An older store recorded no roles (and text_field null by default): it embedded every turn, so it
    opens, fetches and resumes as such, and a build with the new default is refused, not mixed in."""
    pool = _write(tmp_path / "chat.jsonl", CHAT * 4)
    out = tmp_path / "s"
    build_store([pool], out, embedder=static_embedder, shard_rows=4,
                spec=TextSpec(messages_field="messages", roles=None))
    meta = json.loads((out / "store.json").read_text())
    del meta["text_spec"]["roles"], meta["checksum"]
    (out / "store.json").write_text(json.dumps(meta))
    store = PoolStore(out)
    assert store.text_spec.roles is None
    hashes, known = store.text_hashes([0])
    assert known.all() and int(hashes[0]) == text_hash(
        "system: You are a helpful assistant.\nuser: Hi\nassistant: Hello!")
    again = build_store([pool], out, embedder=static_embedder, shard_rows=4,
                        spec=TextSpec(messages_field="messages", roles=None))
    assert again.meta["last_build"]["embedded_shards"] == 0
    with pytest.raises(InputError, match="store was built with text spec"):
        build_store([pool], out, embedder=static_embedder, shard_rows=4, spec=TextSpec(messages_field="messages"))


def test_preview_prints_the_exact_texts_of_the_first_rows(tmp_path):
    pool = _write(tmp_path / "alpaca.jsonl", ALPACA)
    result = CliRunner().invoke(app, ["pool", "preview", str(pool), "-n", "2",
                                      "--template", r"{instruction}[[\n\nInput: {input}]]\n\n{output}"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert json.loads(lines[0].removeprefix("# text spec: "))["template"] == ALPACA_TEMPLATE
    assert lines[1:] == [f"{i}\t{json.dumps(t)}" for i, t in enumerate(ALPACA_TEXTS[:2])]
    chat = _write(tmp_path / "chat.jsonl", CHAT)
    result = CliRunner().invoke(app, ["pool", "preview", str(chat), "--messages-field", "messages",
                                      "--roles", "all", "--plain", "-n", "1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == ["--- row 0 (63 chars) ---", "system: You are a helpful assistant.",
                                              "user: Hi", "assistant: Hello!"]


def test_preview_of_a_store_uses_its_spec_and_options_fail_on_one_line(tmp_path, static_embedder):
    pool = _write(tmp_path / "chat.jsonl", CHAT)
    build_store([pool], tmp_path / "s", embedder=static_embedder, spec=TextSpec(messages_field="messages"))
    result = CliRunner().invoke(app, ["pool", "preview", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == ['0\t"user: Hi\\nassistant: Hello!"',
                                              '1\t"user: Bye\\nassistant: See you."', '2\t"user: Weather?"']
    for args, message in ((["--roles", "user"], "--roles applies to --messages-field only"),
                          (["--template", r"{a}\q"], "unknown escape"),
                          (["--messages-field", "messages", "--roles", "user,,x"], "role names separated")):
        result = CliRunner().invoke(app, ["pool", "preview", str(pool), *args])
        assert result.exit_code == 2 and message in result.output, result.output


_VALUE = st.one_of(st.none(), st.just(""), st.just(" "), st.text(alphabet="ab \n:", min_size=1, max_size=6),
                   st.integers(-5, 5))
_TURN = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool"]),
                               "content": st.text(alphabet="xy \n", max_size=5)})
_ROW = st.fixed_dictionaries({"instruction": st.text(alphabet="ij ", min_size=1, max_size=5),
                              "messages": st.lists(_TURN, max_size=4)},
                             optional={"input": _VALUE, "output": _VALUE})
_SPECS = [TextSpec(template=ALPACA_TEMPLATE), TextSpec(template="{instruction}[[ <{input}|{output}>]]"),
          TextSpec(template="{instruction}[[ {input!r}]][[ {output:>4}]]"), TextSpec(messages_field="messages"),
          TextSpec(messages_field="messages", roles=("assistant", "tool")),
          TextSpec(messages_field="messages", roles=None)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_ROW, min_size=1, max_size=60), which=st.integers(0, len(_SPECS) - 1))
def test_block_reader_gives_the_texts_and_bad_rows_of_extract(tmp_path_factory, monkeypatch, rows, which):
    """pyarrow's block path and `TextSpec.extract` row by row agree on every text and every bad row."""
    spec = _SPECS[which]
    path = _write(tmp_path_factory.mktemp("h") / "rows.jsonl", rows)
    got = []
    for arrow in (True, False):
        with monkeypatch.context() as m:
            m.setattr(_limits, "_JSONL_MIN_SPLIT", 64)
            if not arrow:
                m.setattr(_jsonl, "_ArrowTexts", lambda spec: (_ for _ in ()).throw(ImportError()))
            stats = ReadStats()
            texts = [t for b in iter_batches(path, spec, on_bad_row="skip", stats=stats) for t in b.texts]
            got.append((texts, stats.bad_examples, stats.skipped))
    assert got[0] == got[1]


def test_cli_roles_and_the_facade_make_the_same_spec(tmp_path, static_embedder):
    import tsds
    from tsds.cli import spec_from_options

    assert spec_from_options(None, None, "messages", "all").roles is None
    assert spec_from_options(None, None, "messages", " user, assistant") == TextSpec(messages_field="messages")
    assert spec_from_options(None, None, None, None) is None
    chat = _write(tmp_path / "chat.jsonl", CHAT)
    pool = tsds.Pool.build(chat, tmp_path / "s", embedder=static_embedder, messages_field="messages", roles=None)
    assert pool.store.text_spec == spec_from_options(None, None, "messages", "all")
    assert pool.store.meta["text_spec"]["roles"] is None and pool.store.n_rows == 3
