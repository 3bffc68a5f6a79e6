"""The gatekeeper: promote in the registry UI behind the replay gate (``autotts gatekeeper``).

Fast, without servers: the webhook signature against MLflow's own signer and every change to
a signed delivery (hypothesis), the payload parser on anything, the journal (once, durable,
concurrent), the receiver's answers and its one-lane-per-model order, and the decisions on a
real sqlite registry with the real gate on published data. Slow (``-m slow``), one real
``mlflow server`` per module with the gatekeeper as its own process: aliases set through the
REST API the UI uses, deliveries signed by MLflow, a forged/stale/duplicate set, and a
gatekeeper killed mid-gate that finishes the decision when started again.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from mlflow_autotts.cli.gatekeeper import GatekeeperConfig, InstallConfig, secret_path
from mlflow_autotts.cli.main import main
from mlflow_autotts.controllers.loading import ControllerSpec
from mlflow_autotts.data.json_io import read_json
from mlflow_autotts.data.trajectory import Provenance
from mlflow_autotts.errors import AutoTTSError
from mlflow_autotts.promotion.gate import GATE_TAG, GateConfig, accuracy_text, tokens_text
from mlflow_autotts.promotion.journal import Journal, JournalError, Outcome
from mlflow_autotts.promotion.receiver import Receiver, ReceiverConfig, build_app
from mlflow_autotts.promotion.webhooks import (
    ALIAS_CREATED,
    DELIVERY_ID_HEADER,
    SECRET_ENV,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AliasChange,
    WebhookRefused,
    alias_change,
    ensure_secret,
    read_secret,
    sign,
    verify,
)
from mlflow_autotts.replay.runner import ReplayConfig, evaluate_many
from mlflow_autotts.tracking.gatekeeper import GATEKEEPER_TAG, MAX_ATTEMPTS, Gatekeeper, Watch
from mlflow_autotts.tracking.model_registry import register
from tests.gatekeeper_fixtures import DATA, NAME, gatekeeper_served, wait_for
from tests.helpers import HONEST, runner_results

SECRET = "s3cret-for-the-tests-0123456789"
EPS = 1e-9  # the gate's own float slack (promotion/gate.py)


def delivery(change: dict | bytes, secret: str = SECRET, delivery_id: str | None = None, sent: int | None = None,
             event: str = ALIAS_CREATED) -> tuple[dict[str, str], bytes]:
    """Headers and body as MLflow sends them (``mlflow/webhooks/delivery.py``)."""
    if isinstance(change, bytes):
        body = change
    else:
        entity, action = event.split(".")
        body = json.dumps({"entity": entity, "action": action, "timestamp": "2026-01-01T00:00:00+00:00",
                           "data": change}).encode()
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(int(time.time()) if sent is None else sent)
    return {DELIVERY_ID_HEADER: delivery_id, TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(secret, delivery_id, stamp, body), "Content-Type": "application/json"}, body


# ============================================================ signature and payload
ids = st.one_of(st.uuids().map(str), st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True))
secrets_ = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_categories=("Cs",)), min_size=16,
                   max_size=64)


@settings(max_examples=200, deadline=None)
@given(secret=secrets_, delivery_id=ids, stamp=st.integers(0, 4_000_000_000), body=st.text(max_size=500))
def test_signatures_are_mlflows_own_and_verify(secret, delivery_id, stamp, body):
    from mlflow.webhooks.delivery import _generate_hmac_signature

    raw = body.encode("utf-8")
    mine = sign(secret, delivery_id, str(stamp), raw)
    assert mine == _generate_hmac_signature(secret, delivery_id, str(stamp), body)
    headers = {DELIVERY_ID_HEADER: delivery_id, TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: mine}
    try:
        got = verify(headers, raw, secret, now=stamp + 10, max_age=300)
    except WebhookRefused as exc:  # the signature held; only the body may be refused, as not MLflow's shape
        assert exc.status == 400 and exc.reason.startswith(f"delivery {delivery_id}: ")
    else:
        assert (got.id, got.timestamp) == (delivery_id, stamp)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), delivery_id=ids, version=st.integers(1, 10**6))
def test_any_change_to_a_signed_delivery_is_refused(data, delivery_id, version):
    headers, body = delivery({"name": NAME, "alias": "candidate", "version": str(version)}, delivery_id=delivery_id)
    now = int(headers[TIMESTAMP_HEADER])
    assert verify(headers, body, SECRET, now, 300).id == delivery_id  # untouched: accepted
    what = data.draw(st.sampled_from(["body", "id", "timestamp", "signature", "secret", "version"]))
    h, b, secret = dict(headers), body, SECRET
    if what == "body":
        i = data.draw(st.integers(0, len(b) - 1))
        b = b[:i] + bytes([b[i] ^ data.draw(st.integers(1, 255))]) + b[i + 1:]
    elif what == "id":
        h[DELIVERY_ID_HEADER] = data.draw(ids.filter(lambda x: x != delivery_id))
    elif what == "timestamp":
        h[TIMESTAMP_HEADER] = str(now + data.draw(st.integers(-250, 250).filter(bool)))
    elif what == "signature":
        sig = bytearray(base64.b64decode(h[SIGNATURE_HEADER][3:]))
        sig[data.draw(st.integers(0, len(sig) - 1))] ^= data.draw(st.integers(1, 255))
        h[SIGNATURE_HEADER] = "v1," + base64.b64encode(bytes(sig)).decode()
    elif what == "secret":
        secret = data.draw(secrets_.filter(lambda s: s != SECRET))
    else:
        h[SIGNATURE_HEADER] = "v2," + h[SIGNATURE_HEADER][3:]
    with pytest.raises(WebhookRefused) as refused:
        verify(h, b, secret, now, 300)
    assert refused.value.status == 401 and "does not match" in refused.value.reason


def test_unsigned_stale_future_and_malformed_headers_are_refused_with_the_reason():
    headers, body = delivery({"name": NAME, "alias": "candidate", "version": "3"}, sent=1_000_000)
    cases = {
        "no signature": ({k: v for k, v in headers.items() if k != SIGNATURE_HEADER}, "unsigned delivery"),
        "no id": ({k: v for k, v in headers.items() if k != DELIVERY_ID_HEADER}, f"without the {DELIVERY_ID_HEADER}"),
        "no timestamp": ({k: v for k, v in headers.items() if k != TIMESTAMP_HEADER},
                         f"without the {TIMESTAMP_HEADER}"),
        "id with a newline": ({**headers, DELIVERY_ID_HEADER: "abc\ndef"}, "is not a delivery id"),
        "timestamp in ms with a sign": ({**headers, TIMESTAMP_HEADER: "-1000000"}, "is not unix seconds"),
        "empty signature": ({**headers, SIGNATURE_HEADER: ""}, "does not match"),
        "not base64": ({**headers, SIGNATURE_HEADER: "v1,@@@"}, "does not match"),
    }
    for case, (h, expected) in cases.items():
        with pytest.raises(WebhookRefused) as refused:
            verify(h, body, SECRET, 1_000_010, 300)
        assert refused.value.status == 401 and expected in refused.value.reason, case
    with pytest.raises(WebhookRefused, match=r"stale, sent 301 s ago \(at most 300 s"):
        verify(headers, body, SECRET, 1_000_301, 300)
    with pytest.raises(WebhookRefused, match=r"400 s in the future"):
        verify(headers, body, SECRET, 999_600, 300)
    assert verify(headers, body, SECRET, 1_000_300, 300).id == headers[DELIVERY_ID_HEADER]  # the edge is in
    # headers as HTTP gives them (any case); several signatures, one of them right (key rotation)
    lower = {k.lower(): v for k, v in headers.items()}
    lower[SIGNATURE_HEADER.lower()] = "v1,AAAA " + headers[SIGNATURE_HEADER]
    assert verify(lower, body, SECRET, 1_000_000, 300).event == ALIAS_CREATED


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                         max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                      st.fixed_dictionaries({"entity": st.just("model_version_alias"), "action": st.just("created"),
                                             "data": st.dictionaries(st.sampled_from(["name", "alias", "version", "x"]),
                                                                     json_values, max_size=4)})
                      .map(lambda v: json.dumps(v).encode())))
def test_the_parser_takes_only_mlflows_shapes_and_says_what_is_wrong(body):
    headers, body = delivery(body)
    try:
        got = verify(headers, body, SECRET, int(headers[TIMESTAMP_HEADER]), 300)
        change = alias_change(got)
    except WebhookRefused as exc:
        assert exc.status == 400
        assert exc.reason.startswith(f"delivery {headers[DELIVERY_ID_HEADER]}: ")
        assert "\n" not in exc.reason and len(exc.reason) < 400
        return
    if change is not None:
        assert got.event == ALIAS_CREATED
        assert all(isinstance(x, str) and x.strip() for x in (change.name, change.alias, change.version))
        assert change.version.isdigit() and not change.version.startswith("0")


def test_mlflows_example_payloads_parse_to_the_alias_change_or_nothing():
    from mlflow.entities.webhook import WebhookEvent
    from mlflow.webhooks.types import EVENT_TO_PAYLOAD_CLASS, ModelVersionAliasCreatedPayload

    for (entity, action), payload_class in EVENT_TO_PAYLOAD_CLASS.items():
        event = str(WebhookEvent(entity, action))
        headers, body = delivery(dict(payload_class.example()), event=event)
        got = alias_change(verify(headers, body, SECRET, int(headers[TIMESTAMP_HEADER]), 300))
        if payload_class is ModelVersionAliasCreatedPayload:
            assert got == AliasChange("example_model", "example_alias", "1")
        else:
            assert got is None, event
    for bad, why in (({"name": NAME, "alias": "candidate", "version": "01"}, "is not a version number"),
                     ({"name": NAME, "alias": "candidate", "version": 3}, "'data.version' is missing"),
                     ({"name": "", "alias": "candidate", "version": "3"}, "'data.name' is missing"),
                     ({"name": NAME, "version": "3"}, "'data.alias' is missing")):
        headers, body = delivery(bad)
        with pytest.raises(WebhookRefused, match=why):
            alias_change(verify(headers, body, SECRET, int(headers[TIMESTAMP_HEADER]), 300))


def test_the_secret_comes_from_the_environment_or_a_private_file_written_once(tmp_path):
    path = tmp_path / "state" / "webhook-secret"
    with pytest.raises(AutoTTSError, match=f"no webhook secret: set {SECRET_ENV} or run .*writes {path}"):
        read_secret(path, environ={})
    secret, created = ensure_secret(path, environ={})
    assert created and len(secret) >= 32 and (path.stat().st_mode & 0o777) == 0o600
    assert ensure_secret(path, environ={}) == (secret, False)  # never rewritten
    assert read_secret(path, environ={SECRET_ENV: SECRET}) == SECRET  # the variable wins
    for bad in ("short", " padded-secret-value-123 ", "tab\tinside-the-secret-1"):
        with pytest.raises(AutoTTSError, match=f"\\${SECRET_ENV}: the webhook secret must be at least 16"):
            read_secret(path, environ={SECRET_ENV: bad})
    path.write_text("short\n")
    with pytest.raises(AutoTTSError, match=f"{path}: the webhook secret must be"):
        read_secret(path, environ={})


# ======================================================================== journal
def test_the_journal_takes_a_delivery_once_and_keeps_it_across_a_restart(tmp_path):
    path = tmp_path / "j" / "journal.sqlite3"
    journal = Journal(path)
    change = AliasChange(NAME, "candidate", "2")
    first, new = journal.accept("d1", change, 100, now=1.0)
    again, new_again = journal.accept("d1", AliasChange(NAME, "candidate", "9"), 200, now=2.0)
    assert new and not new_again and again == first and again.change == change  # the first one stands
    journal.accept("d2", AliasChange(NAME, "champion", "1"), 101)
    assert journal.begin("d1") == 1
    journal.close()

    journal = Journal(path)  # a restart
    assert [(e.id, e.state, e.attempts) for e in journal.pending()] == [("d1", "pending", 1), ("d2", "pending", 0)]
    journal.finish("d1", Outcome("refused", "why", "2"))
    journal.failed("d2", "RuntimeError: registry down")
    assert [e.id for e in journal.pending()] == ["d2"] and journal.get("d2").last_error == "RuntimeError: registry down"
    assert (journal.get("d1").decision, journal.get("d1").subject) == ("refused", "2")
    for version in ("1", "3", "1"):
        journal.record_pass(NAME, "champion", version, "d")
    journal.record_pass("other", "champion", "7", "d")
    assert journal.passed(NAME, "champion") == ["1", "3"] and journal.passed(NAME, "candidate") == []
    assert journal.counts() == {"decided": 1, "pending": 1}


def test_concurrent_copies_of_one_delivery_are_taken_once(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite3")
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def take() -> None:
        barrier.wait()
        results.append(journal.accept("same", AliasChange(NAME, "candidate", "1"), 1)[1])

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


def test_a_file_that_is_not_a_journal_is_named_not_overwritten(tmp_path):
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"not a database, " * 100)
    with pytest.raises(JournalError, match=f"{path}: not a gatekeeper journal .*another --state-dir"):
        Journal(path)
    assert path.read_bytes() == b"not a database, " * 100
    newer = tmp_path / "newer.sqlite3"
    Journal(newer).close()
    import sqlite3
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(JournalError, match="journal schema 99, this autotts reads 1"):
        Journal(newer)


# ======================================================================= receiver
class Decisions:
    """What the receiver asked to decide, in order; a version may be held until released."""

    def __init__(self, hold: set[tuple[str, str]] = frozenset(), fail: set[tuple[str, str]] = frozenset()):
        self.log: list[tuple[str, str, str]] = []
        self.hold, self.fail = set(hold), set(fail)
        self.release = threading.Event()

    def __call__(self, entry) -> Outcome:
        key = (entry.name, entry.version)
        self.log.append(("start", *key))
        if key in self.fail:
            raise RuntimeError("registry down")
        if key in self.hold:
            assert self.release.wait(60)
        self.log.append(("end", *key))
        return Outcome("kept", f"seen {entry.id}", entry.version)


def test_the_receiver_answers_each_kind_of_delivery(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite3")
    decisions = Decisions()
    receiver = Receiver(SECRET, journal, decisions, lambda c: c.name == NAME and c.alias in ("candidate", "champion"),
                        300)
    ok = delivery({"name": NAME, "alias": "candidate", "version": "4"})
    assert receiver.receive(*ok) == (202, {"status": "accepted", "delivery": ok[0][DELIVERY_ID_HEADER]})
    status, answer = receiver.receive(*ok)  # MLflow's retry, or a replay within the window
    assert status == 200 and answer["status"] == "duplicate"
    headers, body = ok
    unsigned = {k: v for k, v in headers.items() if k != SIGNATURE_HEADER}
    assert receiver.receive(unsigned, body)[0] == 401
    forged = delivery({"name": NAME, "alias": "candidate", "version": "4"}, secret="another-secret-0123456")
    assert receiver.receive(*forged)[0] == 401
    stale = delivery({"name": NAME, "alias": "candidate", "version": "4"}, sent=int(time.time()) - 301)
    status, answer = receiver.receive(*stale)
    assert status == 401 and "stale" in answer["error"]
    assert receiver.receive(*delivery(b"{not json"))[0] == 400
    for other in ({"name": "another-model", "alias": "candidate", "version": "1"},
                  {"name": NAME, "alias": "staging", "version": "1"}):
        status, answer = receiver.receive(*delivery(other))
        assert status == 200 and answer["status"] == "ignored"
    status, answer = receiver.receive(*delivery({"name": NAME, "version": "1", "key": "k", "value": "v"},
                                                event="model_version_tag.set"))
    assert (status, answer["reason"]) == (200, "not watched: model_version_tag.set")
    wait_for(lambda: journal.counts() == {"decided": 1})
    assert decisions.log == [("start", NAME, "4"), ("end", NAME, "4")]  # decided once
    journal.close()  # a journal that cannot be written: 503, so MLflow retries later
    assert receiver.receive(*delivery({"name": NAME, "alias": "candidate", "version": "5"}))[0] == 503


def test_one_models_deliveries_are_decided_one_at_a_time_and_others_meanwhile(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite3")
    decisions = Decisions(hold={("a", "1")})
    receiver = Receiver(SECRET, journal, decisions, lambda c: True, 300)
    for name, version in (("a", "1"), ("a", "2"), ("b", "1")):
        assert receiver.receive(*delivery({"name": name, "alias": "candidate", "version": version}))[0] == 202
    wait_for(lambda: ("end", "b", "1") in decisions.log)  # b is decided while a's first waits
    wait_for(lambda: receiver.health()["deciding"] == {"a": journal.entries("a")[0].id})
    assert ("start", "a", "2") not in decisions.log
    decisions.release.set()
    wait_for(lambda: journal.counts() == {"decided": 3})
    a = [x for x in decisions.log if x[1] == "a"]
    assert a == [("start", "a", "1"), ("end", "a", "1"), ("start", "a", "2"), ("end", "a", "2")]


def test_a_delivery_whose_decision_failed_stays_pending_and_is_decided_after_a_restart(tmp_path):
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path)
    receiver = Receiver(SECRET, journal, Decisions(fail={(NAME, "1")}), lambda c: True, 300)
    receiver.receive(*delivery({"name": NAME, "alias": "candidate", "version": "1"}))
    receiver.receive(*delivery({"name": NAME, "alias": "candidate", "version": "2"}))
    wait_for(lambda: journal.counts() == {"pending": 1, "decided": 1})
    failed = journal.pending()[0]
    assert (failed.version, failed.attempts, failed.last_error) == ("1", 1, "RuntimeError: registry down")
    journal.close()

    journal = Journal(path)
    decisions = Decisions()
    restarted = Receiver(SECRET, journal, decisions, lambda c: True, 300)
    assert restarted.resume() == 1
    wait_for(lambda: journal.counts() == {"decided": 2})
    assert decisions.log == [("start", NAME, "1"), ("end", NAME, "1")]
    assert journal.get(failed.id).attempts == 2


def test_the_app_bounds_the_body_and_reports_health(tmp_path):
    from starlette.testclient import TestClient

    journal = Journal(tmp_path / "journal.sqlite3")
    receiver = Receiver(SECRET, journal, Decisions(), lambda c: True, 300)
    with TestClient(build_app(receiver, ReceiverConfig(max_body_bytes=1024))) as http:
        headers, body = delivery({"name": NAME, "alias": "candidate", "version": "1"})
        r = http.post("/webhook", content=body, headers=headers)
        assert r.status_code == 202 and r.json()["delivery"] == headers[DELIVERY_ID_HEADER]
        big = delivery(json.dumps({"data": "x" * 2000}).encode())
        r = http.post("/webhook", content=big[1], headers=big[0])
        assert r.status_code == 413 and "1,024 bytes" in r.json()["error"]
        r = http.post("/webhook", content=body, headers={k: v for k, v in headers.items() if k != SIGNATURE_HEADER})
        assert r.status_code == 401 and "unsigned" in r.json()["error"]
        wait_for(lambda: http.get("/health").json()["decided"] == 1)
        assert http.get("/health").json() == {"status": "ok", "pending": 0, "decided": 1, "deciding": {}, "queued": 0}
        assert http.get("/webhook").status_code == 405 and http.get("/docs").status_code == 404


# ======================================================= settings and the command line
def test_settings_and_commands_refuse_bad_input_with_the_option_named(tmp_path):
    with pytest.raises(AutoTTSError, match="--candidate-alias and --champion-alias are both 'champion'"):
        Watch(candidate_alias="champion")
    with pytest.raises(AutoTTSError, match="--champion-alias: invalid alias 'a/b'"):
        Watch(champion_alias="a/b")
    with pytest.raises(AutoTTSError, match="--name: invalid registered model name ' '"):
        Watch(name=" ")
    with pytest.raises(AutoTTSError, match="--gate needs at least one dataset URI"):
        GatekeeperConfig(gate=())
    with pytest.raises(AutoTTSError, match="--url 'ftp://x' is not an http"):
        InstallConfig(url="ftp://x")
    assert InstallConfig(url="http://127.0.0.1:5077").endpoint == "http://127.0.0.1:5077/webhook"
    assert InstallConfig(url="https://gk.example/hooks/mlflow").endpoint == "https://gk.example/hooks/mlflow"

    runner = CliRunner()
    state = tmp_path / "state"
    r = runner.invoke(main, ["gatekeeper", "serve", "--state-dir", str(state)])
    assert r.exit_code == 2 and "error: missing --gate" in r.output
    r = runner.invoke(main, ["gatekeeper", "serve", "--gate", "x.json", "--max-token-ratio", "0",
                             "--state-dir", str(state)])
    assert r.exit_code == 2 and "error: --max-token-ratio must be > 0, got 0.0" in r.output
    r = runner.invoke(main, ["gatekeeper", "serve", "--gate", "x.json", "--port", "70000", "--state-dir", str(state)])
    assert r.exit_code == 2 and "port must be <= 65535" in r.output
    r = runner.invoke(main, ["gatekeeper", "serve", "--gate", "x.json", "--state-dir", str(state)],
                      env={SECRET_ENV: None})
    assert r.exit_code == 2 and f"error: no webhook secret: set {SECRET_ENV}" in r.output
    r = runner.invoke(main, ["gatekeeper", "serve", "--gate", str(tmp_path / "missing.json"),
                             "--state-dir", str(state)], env={SECRET_ENV: SECRET})
    assert r.exit_code == 2 and "missing.json" in r.output and not (state / "journal.sqlite3").exists()
    r = runner.invoke(main, ["gatekeeper", "install", "--url", "http://127.0.0.1:1/webhook", "--no-test",
                             "--state-dir", str(state)],
                      env={SECRET_ENV: None, "MLFLOW_TRACKING_URI": str(tmp_path / "mlruns")})
    assert r.exit_code == 2 and "error: cannot install webhook 'autotts-gatekeeper-autotts-controller'" in r.output
    assert "SQL database" in r.output


@pytest.mark.parametrize("command, cls, required", [("serve", GatekeeperConfig, ["--gate", "a.json"]),
                                                     ("install", InstallConfig, ["--url", "http://h:1/webhook"])])
def test_every_setting_is_an_option_with_its_docstring_and_print_config_round_trips(command, cls, required, tmp_path):
    import yaml

    from mlflow_autotts import settings as settings_mod
    from mlflow_autotts.cli.options import option_decls

    runner = CliRunner()
    text = " ".join(runner.invoke(main, ["gatekeeper", command, "--help"]).output.split())
    for s in settings_mod.describe(cls):
        assert option_decls(s, {})[0].replace("/", " / ") in text and s.help.replace("``", "") in text, s.name
    given = [*required, "--name", "my-model", "--candidate-alias", "next", "--state-dir", str(tmp_path)]
    if command == "serve":
        given += ["--max-accuracy-drop", "0.5", "--shuffles", "7", "--port", "6001", "--max-delivery-age", "60"]
    first = runner.invoke(main, ["gatekeeper", command, *given, "--print-config"])
    assert first.exit_code == 0, first.output
    (tmp_path / "c.yaml").write_text(first.output)
    again = runner.invoke(main, ["gatekeeper", command, "--config", str(tmp_path / "c.yaml"), "--print-config"])
    assert again.output == first.output
    values = yaml.safe_load(first.output)
    assert (values["name"], values["candidate_alias"], values["champion_alias"]) == ("my-model", "next", "champion")
    if command == "serve":
        assert (values["shuffles"], values["port"], values["progress"]) == (7, 6001, False)


# ==================================================== decisions on a real registry
@pytest.fixture(scope="module")
def gate_numbers(data_dir):
    """Each controller's replay on the gate data at the gate's shuffles, computed here."""
    ts = read_json(data_dir / DATA[0] / f"{DATA[1]}.json", Provenance(*DATA))
    specs = {"cmc0.5": ControllerSpec("cmc", 0.5), "sc8": ControllerSpec("sc", None, {"n": 8}),
             "cmc0.75": ControllerSpec("cmc", 0.75), "cmc0.6": ControllerSpec("cmc", 0.6)}
    results = evaluate_many(list(specs.values()), [ts], ReplayConfig(shuffles=20, workers=1, progress=False),
                            keep_episodes=False)
    out = dict(zip(specs, results))
    # the premises of the decisions below (a 1.5x token allowance)
    assert out["sc8"].accuracy < out["cmc0.5"].accuracy
    assert out["cmc0.75"].accuracy >= out["cmc0.5"].accuracy
    assert out["cmc0.75"].mean_tokens <= 1.5 * out["cmc0.5"].mean_tokens
    return out


BROKEN = '''
from mlflow_autotts.controllers.base import Controller


class Broken(Controller):
    name = "broken"

    def solve(self, episode):
        raise RuntimeError("boom at solve")
'''


class InProcess:
    """The receiver and the gatekeeper in this process, on the ``mlflow_store`` registry."""

    def __init__(self, tmp_path: Path, gate_data: str):
        from mlflow import MlflowClient

        self.journal = Journal(tmp_path / "state" / "journal.sqlite3")
        self.keeper = Gatekeeper(Watch(), (gate_data,), GateConfig(max_token_ratio=1.5, shuffles=20, workers=1,
                                                                   progress=False), self.journal)
        self.receiver = Receiver(SECRET, self.journal, self.keeper.decide, self.keeper.watches, 300)
        self.client = MlflowClient()

    def set(self, alias: str, version: str) -> str:
        """Set the alias, deliver its event as MLflow would, wait for the decision; its outcome."""
        self.client.set_registered_model_alias(NAME, alias, version)
        headers, body = delivery({"name": NAME, "alias": alias, "version": version})
        return self.deliver(headers, body)

    def deliver(self, headers, body) -> str:
        assert self.receiver.receive(headers, body)[0] == 202
        did = headers[DELIVERY_ID_HEADER]
        return wait_for(lambda: self.journal.get(did).decision)

    def champion(self) -> str | None:
        version = self.client.get_registered_model(NAME).aliases.get("champion")
        return None if version is None else str(version)

    def tags(self, version: str) -> dict[str, str]:
        return self.client.get_model_version(NAME, version).tags


def test_candidates_are_gated_and_champion_is_guarded_on_a_registry(mlflow_store, data_dir, gate_numbers, tmp_path):
    for spec in (ControllerSpec("cmc", 0.5), ControllerSpec("sc", None, {"n": 8}), ControllerSpec("cmc", 0.75)):
        register(spec, name=NAME)
    world = InProcess(tmp_path, str(data_dir / DATA[0] / f"{DATA[1]}.json"))
    cmc, sc8, better = gate_numbers["cmc0.5"], gate_numbers["sc8"], gate_numbers["cmc0.75"]

    # v1: nothing to compare with, promoted
    assert world.set("candidate", "1") == "promoted"
    assert world.champion() == "1" and world.journal.passed(NAME, "champion") == ["1"]
    v1 = world.tags("1")
    assert v1[f"{GATEKEEPER_TAG}.decision"] == "promoted" and "no incumbent" in v1[f"{GATEKEEPER_TAG}.reason"]
    assert v1[f"{GATE_TAG}.accuracy"] == accuracy_text(cmc.accuracy)
    # the gate's report is the version's description, linking to the gate's run
    text = world.client.get_model_version(NAME, "1").description
    assert text.startswith("### Gate: v1 promoted to `@champion`\n")
    assert "- **Gate run:** [gate-autotts-controller-v1](" in text

    # v2: SC@8, less accurate, refused; the champion stays and the version says why, with the numbers
    assert world.set("candidate", "2") == "refused"
    assert world.champion() == "1"
    v2 = world.tags("2")
    assert v2[f"{GATE_TAG}.decision"] == "refused" and v2[f"{GATE_TAG}.gain"].endswith(" tokens vs v1")
    reason = v2[f"{GATEKEEPER_TAG}.reason"]
    assert reason.startswith("refused: @champion stays on v1: accuracy")
    assert f"{sc8.accuracy:.2f}%" in reason and f"{cmc.accuracy:.2f}%" in reason

    # @champion set by hand on the refused version: moved back, and v2 says why
    assert world.set("champion", "2") == "reverted"
    assert world.champion() == "1"
    assert world.tags("2")[f"{GATEKEEPER_TAG}.reason"] == (
        "@champion was set on v2, which has not passed the gate; moved back to v1, the version the gate last "
        "promoted. Set @candidate on v2 to gate it.")
    assert world.set("champion", "1") == "kept"  # the revert's own event: nothing to do

    # v3: more accurate within 1.5x the tokens, promoted over v1
    assert world.set("candidate", "3") == "promoted"
    assert world.champion() == "3" and world.journal.passed(NAME, "champion") == ["3", "1"]
    assert world.tags("3")[f"{GATE_TAG}.tokens"] == tokens_text(better.mean_tokens)
    assert world.tags("1")[f"{GATE_TAG}.decision"] == "replaced"  # the incumbent of v3's gate

    # v1 passed once, but v3 since: @champion back on v1 by hand is a rollback the gate did not make
    assert world.set("champion", "1") == "reverted"
    assert world.champion() == "3"
    assert "v1, which passed the gate before v3 did; moved back to v3" in world.tags("1")[f"{GATEKEEPER_TAG}.reason"]

    # a late delivery for a @candidate that has moved on decides nothing and writes nothing
    before = world.tags("2")
    headers, body = delivery({"name": NAME, "alias": "candidate", "version": "2"})
    assert world.deliver(headers, body) == "superseded"
    assert world.tags("2") == before and world.champion() == "3"


def test_a_gate_that_cannot_run_leaves_the_champion_alone_and_says_why(mlflow_store, data_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken.py"
    broken.write_text(BROKEN)
    for spec in (ControllerSpec("cmc", 0.5), ControllerSpec("cmc", 0.75), ControllerSpec("cmc", 0.6),
                 ControllerSpec(str(broken))):
        register(spec, name=NAME)
    data = tmp_path / "gate.json"
    shutil.copy(data_dir / DATA[0] / f"{DATA[1]}.json", data)
    world = InProcess(tmp_path, str(data))

    # nothing has passed yet: a @champion set by hand is taken off
    assert world.set("champion", "1") == "removed"
    assert world.champion() is None
    assert "no version has passed, so @champion was removed" in world.tags("1")[f"{GATEKEEPER_TAG}.reason"]
    assert world.set("candidate", "1") == "promoted" and world.champion() == "1"

    # the gate data is gone
    data.unlink()
    assert world.set("candidate", "2") == "error"
    assert world.champion() == "1"
    reason = world.tags("2")[f"{GATEKEEPER_TAG}.reason"]
    assert reason.startswith("the gate could not run: ") and str(data) in reason
    assert reason.endswith("@champion stays on v1; set @candidate again to retry.")
    assert f"{GATE_TAG}.decision" not in world.tags("2")

    # the candidate's model was changed after registration: its digest check stops the gate
    shutil.copy(data_dir / DATA[0] / f"{DATA[1]}.json", data)
    logged = Path(world.client.get_model_version_download_uri(NAME, "3").removeprefix("file://"))
    mlmodel = logged / "MLmodel"
    assert mlmodel.is_file(), logged
    mlmodel.write_text(mlmodel.read_text() + "\n# changed\n")
    assert world.set("candidate", "3") == "error"
    assert world.champion() == "1"
    assert "digest" in world.tags("3")[f"{GATEKEEPER_TAG}.reason"]

    # a candidate whose code fails in the sandbox: stopped there, and the version says how
    assert world.set("candidate", "4") == "error"
    assert world.champion() == "1"
    reason = world.tags("4")[f"{GATEKEEPER_TAG}.reason"]
    assert "controller 'broken' failed in the sandbox" in reason and "boom at solve" in reason

    # a delivery interrupted too often is given up, with a note on the version
    world.client.set_registered_model_alias(NAME, "candidate", "2")
    entry, _ = world.journal.accept("tired", AliasChange(NAME, "candidate", "2"), int(time.time()))
    for _ in range(MAX_ATTEMPTS + 1):
        world.journal.begin("tired")
    outcome = world.keeper.decide(world.journal.get("tired"))
    assert outcome.decision == "error" and outcome.subject == "2"
    assert world.tags("2")[f"{GATEKEEPER_TAG}.reason"].startswith(f"given up after {MAX_ATTEMPTS} interrupted attempts")
    assert world.champion() == "1"


# ============================================ a real mlflow server, the gatekeeper as a process
@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("gatekeeper-server")
    (tmp / "honest.py").write_text(HONEST)
    specs = (ControllerSpec("cmc", 0.5), ControllerSpec("sc", None, {"n": 8}), ControllerSpec("cmc", 0.75),
             ControllerSpec(str(tmp / "honest.py")), ControllerSpec("cmc", 0.6))
    with gatekeeper_served(tmp, str(data_dir / DATA[0] / f"{DATA[1]}.json"), specs) as world:
        yield world


def passes(candidate, incumbent) -> bool:
    """The rule of the slow tests' gatekeeper (no accuracy drop, 1.5x the tokens), on numbers computed here."""
    return (candidate.accuracy >= incumbent.accuracy - EPS
            and candidate.mean_tokens <= 1.5 * incumbent.mean_tokens * (1 + EPS))


@pytest.fixture(scope="module")
def honest_numbers(served, data_dir):
    """The sandboxed candidate's replay, by the in-process runner (the test's own source)."""
    ts = read_json(data_dir / DATA[0] / f"{DATA[1]}.json", Provenance(*DATA))
    (result,) = runner_results(str(served.keeper.tmp / "honest.py"), [ts], [0.5], 20)
    return result


@pytest.mark.slow
def test_aliases_set_as_the_ui_does_are_gated_and_champion_is_guarded(served, gate_numbers, honest_numbers):
    cmc, sc8, better, honest = gate_numbers["cmc0.5"], gate_numbers["sc8"], gate_numbers["cmc0.75"], honest_numbers

    steps = [("1", "promoted", "1"), ("2", "refused", "1"), ("3", "promoted", "3")]
    # the sandboxed candidate: decided by the rule on the numbers computed here
    steps.append(("4", "promoted", "4") if passes(honest, better) else ("4", "refused", "3"))
    for version, decision, champion in steps:
        seq = served.last_seq()
        served.set_alias("candidate", version)
        entry = served.decided("candidate", version, seq)
        assert entry.decision == decision, (version, entry.reason, served.keeper.log()[-3000:])
        assert served.champion() == champion
        assert served.tags(version)[f"{GATEKEEPER_TAG}.decision"] == decision
        assert served.tags(version)[f"{GATEKEEPER_TAG}.delivery"] == entry.id
    assert served.tags("1")[f"{GATE_TAG}.accuracy"] == accuracy_text(cmc.accuracy)
    assert served.tags("2")[f"{GATE_TAG}.accuracy"] == accuracy_text(sc8.accuracy)
    assert served.tags("3")[f"{GATE_TAG}.tokens"] == tokens_text(better.mean_tokens)
    assert served.tags("4")[f"{GATE_TAG}.accuracy"] == accuracy_text(honest.accuracy)
    assert served.tags("4")["autotts.controller"] == "first_agreement"

    # @champion set directly on a version the gate refused: moved back, and v2 says why
    legit = served.champion()
    seq = served.last_seq()
    served.set_alias("champion", "2")
    entry = served.decided("champion", "2", seq)
    assert entry.decision == "reverted" and served.champion() == legit
    assert served.tags("2")[f"{GATEKEEPER_TAG}.reason"].startswith(
        f"@champion was set on v2, which has not passed the gate; moved back to v{legit}")
    assert served.decided("champion", legit, entry.seq).decision == "kept"  # the revert's own delivery


@pytest.mark.slow
def test_unsigned_stale_forged_and_duplicate_deliveries(served):
    secret = secret_path(str(served.keeper.state)).read_text().strip()
    url = f"{served.keeper.url}/webhook"
    legit = served.champion()
    change = {"name": NAME, "alias": "champion", "version": "2"}  # would move @champion if believed

    def post(headers, body):
        return requests.post(url, data=body, headers=headers, timeout=30)

    headers, body = delivery(change, secret=secret)
    r = post({k: v for k, v in headers.items() if k != SIGNATURE_HEADER}, body)
    assert r.status_code == 401 and "unsigned" in r.json()["error"]
    r = post(*delivery(change, secret="guessed-secret-0123456789"))
    assert r.status_code == 401 and "does not match" in r.json()["error"]
    r = post(*delivery(change, secret=secret, sent=int(time.time()) - 3600))
    assert r.status_code == 401 and "stale" in r.json()["error"]
    forged_body = body.replace(b'"version": "2"', b'"version": "5"')
    assert post(headers, forged_body).status_code == 401
    assert served.journal.get(headers[DELIVERY_ID_HEADER]) is None and served.champion() == legit

    # one signed delivery sent four times at once (MLflow's retries, a replay): decided once
    seq = served.last_seq()
    served.client.set_registered_model_alias(NAME, "candidate", legit)  # MLflow's own delivery: gated once
    mlflows = served.decided("candidate", legit, seq)
    again, body = delivery({"name": NAME, "alias": "candidate", "version": legit}, secret=secret)
    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(post(again, body).status_code)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [200, 200, 200, 202]
    mine = wait_for(lambda: (e := served.journal.get(again[DELIVERY_ID_HEADER])) and e.state == "decided" and e)
    assert mine.attempts == 1 and mine.decision == mlflows.decision == "promoted"  # the same version against itself
    assert served.tags(legit)[f"{GATEKEEPER_TAG}.delivery"] == mine.id
    assert [e.id for e in served.journal.entries(NAME)].count(mine.id) == 1
    assert post(again, body).json()["status"] == "duplicate" and served.champion() == legit


@pytest.mark.slow
def test_a_gatekeeper_killed_mid_gate_finishes_the_decision_when_started_again(served, gate_numbers, honest_numbers):
    keeper = served.keeper
    seq = served.last_seq()
    served.set_alias("candidate", "5")

    def deciding():
        """the gatekeeper deciding @candidate -> v5"""
        pending = [e for e in served.journal.pending() if e.seq > seq and e.version == "5" and e.attempts == 1]
        busy = requests.get(f"{keeper.url}/health", timeout=5).json()["deciding"]
        return pending and busy.get(NAME) == pending[0].id and pending[0]

    entry = wait_for(deciding, every=0.02)
    keeper.kill()
    after = served.journal.get(entry.id)
    assert after.state == "pending" and after.attempts == 1
    assert f"{GATEKEEPER_TAG}.decision" not in served.tags("5")  # nothing decided before the crash

    keeper.start()
    done = served.decided("candidate", "5", seq)
    assert done.id == entry.id and done.attempts == 2, keeper.log()[-3000:]
    six, tags = gate_numbers["cmc0.6"], served.tags("5")
    against = tags[f"{GATE_TAG}.gain"].rsplit(" vs ", 1)[1]  # "+1.25 pts, 0.88x tokens vs v3"
    incumbent = {"v3": gate_numbers["cmc0.75"], "v4": honest_numbers}[against]
    assert done.decision == ("promoted" if passes(six, incumbent) else "refused")
    assert tags[f"{GATE_TAG}.accuracy"] == accuracy_text(six.accuracy)
    assert tags[f"{GATEKEEPER_TAG}.decision"] == done.decision
    assert served.champion() == ("5" if done.decision == "promoted" else against[1:])
    assert "resuming 1 pending delivery" in keeper.log()
