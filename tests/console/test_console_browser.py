"""The web console in a real browser (Debian's chromium through chromium-driver + Selenium, headless)
against a real server: real model, real retrieval, real gRPC behind the console's JSON routes, with an
API token. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import math
import shutil
import socket
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tutorforge.core.client import open_channel
from tutorforge.core.jobs import JobManager, JobState
from tutorforge.core.server import start_server
from tutorforge.v1 import retrieval_pb2, retrieval_pb2_grpc

from tests.conftest import make_settings
from tests.tooling import missing_tool

pytestmark = pytest.mark.slow

TOKEN = "console-s3cret"
DOCUMENT = (
    "Photosynthesis is how plants make their own food. Chlorophyll in the leaves absorbs sunlight, the plant "
    "takes in carbon dioxide through pores called stomata, and water rises from the roots. Using light energy "
    "the plant turns carbon dioxide and water into glucose, and releases oxygen."
)
TRAINING_STEPS = 12


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory):
    port = _free_port()
    settings = make_settings(
        tmp_path_factory.mktemp("console"),
        inference__threads=1,
        server__http_port=port,
        server__api_token=SecretStr(TOKEN),
        retrieval__chunk_size_tokens=64,
        retrieval__chunk_overlap_tokens=8,
    )
    running = start_server(settings, ("inference", "retrieval", "training"), port=0)
    channel = open_channel(running.address, TOKEN)
    retrieval_pb2_grpc.RetrievalServiceStub(channel).IngestDocuments(iter([
        retrieval_pb2.IngestDocumentsRequest(document=retrieval_pb2.DocumentHeader(
            document_id="photosynthesis", filename="photosynthesis.md",
            metadata=retrieval_pb2.DocumentMetadata(source="photosynthesis.md", category="biology"),
        )),
        retrieval_pb2.IngestDocumentsRequest(content=DOCUMENT.encode()),
    ]))
    yield running, f"http://127.0.0.1:{port}/"
    channel.close()
    running.stop(grace=1)


@pytest.fixture(scope="module")
def training_job(console_server) -> tuple[str, list[float]]:
    """A finished training job's record and loss events, written through the jobs store as the training
    service writes them (a real Ray run takes minutes; the page only reads the record)."""
    running, _ = console_server
    jobs = JobManager(running.runtime.store, "training")
    record = jobs.create(labels={"adapter_name": "console-tutor", "dataset": "starter"})
    jobs.update(record.id, state=JobState.RUNNING, message="running")
    losses = [2.9 * math.exp(-step / 6) + 0.8 for step in range(1, TRAINING_STEPS + 1)]
    for step, loss in enumerate(losses, start=1):
        metrics = {"loss": loss, **({"eval_loss": loss + 0.1} if step % 4 == 0 else {})}
        jobs.update(record.id, message=f"step {step}/{TRAINING_STEPS} loss {loss:.4f}", step=step,
                    total_steps=TRAINING_STEPS, progress=step / TRAINING_STEPS, metrics=metrics)
    jobs.update(record.id, state=JobState.SUCCEEDED, message="done", progress=1.0, result="console-tutor@v1")
    return record.id, losses


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        missing_tool("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing_tool("selenium is not installed (pip install selenium; it is in the dev extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    yield session
    session.quit()


def _wait(browser, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(condition)


def _css(browser, selector: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, selector)


def _use_token(browser, token: str) -> None:
    field = _css(browser, "#token")
    field.clear()
    field.send_keys(token)
    _css(browser, "#token-form button").click()


def test_page_is_open_but_the_api_needs_the_token(console_server) -> None:
    _, url = console_server
    page = httpx.get(url)
    assert page.status_code == 200 and "console/static/console.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(url + "console/static/console.css").status_code == 200
    assert httpx.get(url + "console/api/tutors").status_code == 401
    tutors = httpx.get(url + "console/api/tutors", headers={"Authorization": f"Bearer {TOKEN}"})
    assert tutors.status_code == 200 and tutors.json()["base_model"]
    # Programs live in the optimization service, which this server does not host: said, not failed.
    assert tutors.json()["programs"] == [] and "optimization" in tutors.json()["note"]
    empty = httpx.get(url + "console/api/search?q=", headers={"Authorization": f"Bearer {TOKEN}"})
    assert empty.status_code == 400 and "q is empty" in empty.json()["error"]["message"]
    unknown = httpx.get(url + "console/api/jobs/nope", headers={"Authorization": f"Bearer {TOKEN}"})
    assert unknown.status_code == 404 and "job_id" in unknown.json()["error"]["message"]


def test_wrong_token_shows_a_clear_message(console_server, browser, tmp_path) -> None:
    _, url = console_server
    browser.get(url + "#/chat")
    _use_token(browser, "not-the-token")
    _wait(browser, lambda b: "refused the API token" in _css(b, "#status").text)
    browser.save_screenshot(str(tmp_path / "wrong-token.png"))
    assert "API token" in _css(browser, "#status").text


def test_chat_streams_a_reply_with_its_citation(console_server, browser, tmp_path) -> None:
    _, url = console_server
    browser.get(url + "#/chat")
    _use_token(browser, TOKEN)
    _wait(browser, lambda b: "Base model" in _css(b, "#tutor").text)
    tokens = _css(browser, "#max-tokens")
    tokens.clear()
    tokens.send_keys("16")
    question = _css(browser, "#question")
    question.send_keys("How do plants make their own food?")
    question.send_keys("\n")  # Enter sends
    _wait(browser, lambda b: b.find_elements("css selector", ".turn.assistant .citation"), timeout=120)
    _wait(browser, lambda b: _css(b, "#send").is_enabled() and _css(b, ".turn.assistant .text").text.strip(), timeout=300)
    browser.save_screenshot(str(tmp_path / "chat.png"))
    citation = _css(browser, ".turn.assistant .citation").text
    assert "photosynthesis.md" in citation and "score 0." in citation
    assert not _css(browser, "#status").text  # no error
    # A second turn carries the history; "New conversation" clears it.
    question = _css(browser, "#question")
    question.send_keys("And what do they release?\n")
    _wait(browser, lambda b: len(b.find_elements("css selector", ".turn.assistant")) == 2
          and _css(b, "#send").is_enabled(), timeout=300)
    assert len(browser.find_elements("css selector", ".turn.user")) == 2
    browser.set_window_size(390, 844)  # a phone
    browser.save_screenshot(str(tmp_path / "chat-phone.png"))
    browser.set_window_size(1280, 1000)
    _css(browser, "#new-conversation").click()
    assert not browser.find_elements("css selector", ".turn")


def test_training_job_page_draws_the_loss_curve(console_server, training_job, browser, tmp_path) -> None:
    _, url = console_server
    job_id, losses = training_job
    browser.get(url + "#/jobs")
    _use_token(browser, TOKEN)
    _wait(browser, lambda b: b.find_elements("link text", job_id))
    browser.find_element("link text", job_id).click()
    loss = _wait(browser, lambda b: b.find_elements("css selector", "#curves polyline[data-series='loss']"))[0]
    browser.save_screenshot(str(tmp_path / "training-job.png"))
    assert len(loss.get_attribute("points").split()) == len(losses)
    evaluated = _css(browser, "#curves polyline[data-series='eval_loss']").get_attribute("points").split()
    assert len(evaluated) == TRAINING_STEPS // 4
    assert _css(browser, "#job-state").text == "succeeded"
    assert "null" not in _css(browser, "#view").text.split()
    label = _css(browser, "#curves svg").get_attribute("aria-label")
    assert f"loss {losses[-1]:.3f}" in label
