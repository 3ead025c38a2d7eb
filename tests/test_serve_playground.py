"""The playground (``GET /``) in a real headless Chromium on the tiny run: sliders named from the
run's objectives and kept on the simplex, the request the page sends, the streamed answer it
shows (the server's own answer) and the desired rewards it says it asked for, the compare mode
(which keeps every column's sliders and answer), the temperature field, the mapping in words, the
favicon, the API key. One browser for the module. Skipped without selenium or Chromium."""

import dataclasses
import http.client
import json
import shutil

import pytest
from helpers import CHAT, NAMES, calibrated_copy, request, running

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,  # a browser in its own processes
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="needs Chromium and its driver (Debian: apt-get install chromium chromium-driver)",
    ),
]


@pytest.fixture(scope="module")
def server(tiny_offline):
    with running(tiny_offline / "train", max_tokens=24) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def page_state(browser):
    return browser.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def load(browser, url, state="ready"):
    browser.get(url + "/")
    WebDriverWait(browser, 60).until(lambda b: page_state(b) == state)


def send(browser):
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, 60).until(lambda b: page_state(b) == "done")


def move(browser, slider, value):
    """Set a range input as a drag does: its value, then an input event."""
    browser.execute_script(
        "arguments[0].value = arguments[1];"
        "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
        slider,
        value,
    )


def values(browser, columns):
    return [[int(s.get_property("value")) for s in sliders(browser, k)] for k in range(columns)]


def answers(browser, columns):
    return [
        browser.find_element(By.CSS_SELECTOR, f"#column-{k} .answer").get_property("textContent")
        for k in range(columns)
    ]


def sent_request(browser, column):
    """The body the column's last request sent (the page records it in ``data-request``)."""
    return json.loads(browser.find_element(By.ID, f"column-{column}").get_attribute("data-request"))


def type_into(browser, element_id, text):
    """Replace the field's text as a user does: select all, delete, type. (``clear()`` does nothing
    to a number field holding text that is not a number: its value is already empty.)"""
    field = browser.find_element(By.ID, element_id)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.BACKSPACE)
    if text:
        field.send_keys(text)
    return field


def sliders(browser, column):
    return browser.find_elements(By.CSS_SELECTOR, f"#column-{column} input[type=range]")


def check_column(browser, server, column):
    """The preference the column sent is its sliders' and sums to 1; the answer it shows is the
    server's answer to that request; so are the desired rewards and the scores it shows."""
    section = browser.find_element(By.ID, f"column-{column}")
    assert section.get_attribute("data-state") == "done"
    sent = json.loads(section.get_attribute("data-request"))
    shown = [int(slider.get_property("value")) / 100 for slider in sliders(browser, column)]
    assert sent["preference"] == shown and abs(sum(sent["preference"]) - 1) < 1e-9
    assert sent["stream"] is True and sent["score"] is True
    status, _, answer = request(server, CHAT, sent | {"stream": False})
    assert status == 200
    text = section.find_element(By.CLASS_NAME, "answer").get_property("textContent")
    assert text == answer["choices"][0]["message"]["content"]
    ric = answer["ric"]
    rows = section.find_elements(By.CSS_SELECTOR, "tbody tr")
    expected = [
        [name, f"{desired:.2f}", f"{ric['scores'][0]['standardized'][name]:.2f}"]
        for name, desired in zip(NAMES, ric["desired_rewards"], strict=True)
    ]
    assert [row.text.split()[:3] for row in rows] == expected
    pairs = zip(NAMES, ric["desired_rewards"], strict=True)
    asked = ", ".join(f"{name} {desired:+.2f} sd" for name, desired in pairs)
    assert section.find_element(By.CLASS_NAME, "asked").text == f"asked for: {asked}"


def test_playground_sends_its_sliders_and_shows_the_streamed_answer(server, browser):
    browser.get(server + "/")
    WebDriverWait(browser, 60).until(lambda b: page_state(b) == "ready")
    labels = browser.find_elements(By.CSS_SELECTOR, "#column-0 .slider label")
    assert [label.text for label in labels] == NAMES
    first, second = sliders(browser, 0)
    move(browser, first, 30)
    second.send_keys(Keys.ARROW_RIGHT)  # the keyboard too: 0.70 -> 0.71, the other follows
    assert [int(s.get_property("value")) for s in sliders(browser, 0)] == [29, 71]
    outputs = browser.find_elements(By.CSS_SELECTOR, "#column-0 output")
    assert [output.text for output in outputs] == ["0.29", "0.71"]
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("Tell me about foxes.")
    browser.find_element(By.ID, "seed").send_keys("5")
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, 60).until(lambda b: page_state(b) == "done")
    check_column(browser, server, 0)

    # Compare mode: three columns, the first keeps its sliders, the others start one-hot.
    Select(browser.find_element(By.ID, "compare")).select_by_value("3")
    values = [[int(s.get_property("value")) for s in sliders(browser, k)] for k in range(3)]
    assert values == [[29, 71], [100, 0], [0, 100]]
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, 60).until(lambda b: page_state(b) == "done")
    for column in range(3):
        check_column(browser, server, column)


def test_the_compare_mode_keeps_the_sliders_and_the_answers(server, browser):
    load(browser, server)
    type_into(browser, "prompt", "What is a fox?")
    type_into(browser, "seed", "3")  # sampled, reproducibly: check_column asks again
    move(browser, sliders(browser, 0)[0], 40)
    send(browser)
    single = answers(browser, 1)
    assert single[0]
    compare = Select(browser.find_element(By.ID, "compare"))
    compare.select_by_value("2")
    assert values(browser, 2) == [[40, 60], [100, 0]]
    assert answers(browser, 2) == [single[0], ""]
    move(browser, sliders(browser, 1)[0], 20)
    send(browser)
    both = answers(browser, 2)
    requests = [
        browser.find_element(By.ID, f"column-{k}").get_attribute("data-request") for k in range(2)
    ]
    compare.select_by_value("1")
    assert browser.find_elements(By.ID, "column-1") == []
    assert values(browser, 1) == [[40, 60]] and answers(browser, 1) == both[:1]
    compare.select_by_value("2")
    assert values(browser, 2) == [[40, 60], [20, 80]] and answers(browser, 2) == both
    for column in range(2):  # the answer shown is still the server's answer to its sliders
        section = browser.find_element(By.ID, f"column-{column}")
        assert section.get_attribute("data-request") == requests[column]
        check_column(browser, server, column)
    compare.select_by_value("3")  # a column never shown starts from its preset
    assert values(browser, 3) == [[40, 60], [20, 80], [0, 100]]
    assert answers(browser, 3) == [*both, ""]


def test_the_temperature_reaches_the_request_and_an_invalid_one_is_not_sent(server, browser):
    load(browser, server)
    type_into(browser, "prompt", "Why is the sky blue?")
    type_into(browser, "seed", "7")
    error = browser.find_element(By.ID, "temperature-error")
    type_into(browser, "temperature", "0")  # greedy: sent as 0, not dropped
    send(browser)
    assert sent_request(browser, 0)["temperature"] == 0
    check_column(browser, server, 0)
    type_into(browser, "temperature", "1.3")
    send(browser)
    sent = sent_request(browser, 0)
    assert sent["temperature"] == 1.3 and sent["seed"] == 7
    check_column(browser, server, 0)
    assert error.text == ""

    # Invalid values: an error next to the field, and no request at all.
    browser.execute_script(
        "window.calls = [];const real = window.fetch;"
        "window.fetch = (...args) => (window.calls.push(String(args[0])), real(...args));"
    )
    before = browser.find_element(By.ID, "column-0").get_attribute("data-request")
    for text, message in (("2.5", "outside 0..2"), ("-1", "outside 0..2"), ("1e", "Not a number")):
        field = type_into(browser, "temperature", text)
        assert message in error.text, (text, error.text)
        assert field.get_attribute("aria-invalid") == "true"
        browser.find_element(By.ID, "send").click()
        assert page_state(browser) == "invalid"
        assert message in error.text
    assert browser.execute_script("return window.calls") == []
    assert browser.find_element(By.ID, "column-0").get_attribute("data-request") == before
    type_into(browser, "temperature", "")  # empty again: the server's default, not sent
    assert error.text == ""
    send(browser)
    assert browser.execute_script("return window.calls") == [CHAT]
    assert "temperature" not in sent_request(browser, 0)
    check_column(browser, server, 0)


def test_the_mapping_is_said_in_words_and_the_page_has_a_favicon(server, browser):
    load(browser, server)
    status, _, models = request(server, "/v1/models", method="GET")
    assert status == 200
    mapping = models["data"][0]["ric"]["mapping"]
    sentence = browser.find_element(By.ID, "mapping").text
    assert sentence.startswith("Each slider is how much you care about that objective")
    assert "in training standard deviations" in sentence
    for name, low, high in zip(NAMES, mapping["r_min"], mapping["r_max"], strict=True):
        assert f"{name} {low:.2f} to {high:.2f}" in sentence
    assert f"With this mapping ({mapping['method']}" in sentence
    # Each method the server knows has its own sentence; another one, the server's description.
    said = {
        method: browser.execute_script(
            "return methodSentence(arguments[0], 2)",
            {"method": method, "r_min": [-1, -1], "r_max": [1, 1], "p": p, "description": "d."},
        )
        for method, p in (("p_inf", None), ("linear", None), ("p_norm", 2), ("convex", "inf"))
    }
    assert "weight at least 1/2 (0.50) is asked for its maximum" in said["p_inf"]
    assert "weight 0 asks for r_min, weight 1 for r_max" in said["linear"]
    assert "(p_norm, p = 2)" in said["p_norm"] and "p-norm of 1" in said["p_norm"]
    assert "(convex, p = ∞)" in said["convex"] and "optimization" in said["convex"]
    assert sentence.endswith(said[mapping["method"]])
    calibrated = {"method": "calibrated", "p": "inf", "r_min": [-1, -1], "r_max": [1, 1]}
    said = browser.execute_script("return methodSentence(arguments[0], 2)", calibrated)
    assert said.startswith("With this mapping (calibrated, p = ∞)") and "calibration" in said
    # An uncalibrated model has no reach: no "rewards to obtain" mode.
    assert "calibrated" not in sentence
    assert not browser.find_element(By.ID, "steer-by").is_displayed()
    other = {"method": "fitted", "r_min": [0], "r_max": [1], "description": "Fitted curves."}
    assert browser.execute_script("return methodSentence(arguments[0], 1)", other) == (
        "With this mapping (fitted): Fitted curves."
    )

    # The favicon is inline (no request to /favicon.ico) and a picture the browser can draw.
    icon = browser.find_element(By.CSS_SELECTOR, "link[rel=icon]").get_attribute("href")
    assert icon.startswith("data:image/svg+xml,")
    drawn = browser.execute_async_script(
        "const done = arguments[1], image = new Image();"
        "image.onload = () => done(image.naturalWidth); image.onerror = () => done(0);"
        "image.src = arguments[0];",
        icon,
    )
    assert drawn > 0


def test_an_api_key_is_asked_for_after_a_401_and_sent_on_every_call(tiny_offline, browser):
    from ric.config import ServeConfig

    if "api_keys" not in {field.name for field in dataclasses.fields(ServeConfig)}:
        pytest.skip("ServeConfig has no api_keys yet")
    with running(tiny_offline / "train", max_tokens=24, api_keys=["k1"]) as keyed:
        status, _, _ = request(keyed, "/v1/models", method="GET")
        if status != 401:
            pytest.skip(f"the server does not check serve.api_keys yet (GET /v1/models: {status})")
        page = http.client.HTTPConnection(*keyed.removeprefix("http://").split(":"))
        page.request("GET", "/")
        if page.getresponse().status != 200:
            pytest.skip("the server asks a key for the playground page itself")
        load(browser, keyed, state="key")  # a fresh port: no key stored for its origin yet
        form = browser.find_element(By.ID, "key-form")
        assert form.is_displayed() and "needs an API key" in form.text
        field = browser.find_element(By.ID, "api-key")
        assert field.get_attribute("type") == "password"
        assert browser.find_element(By.CSS_SELECTOR, "label[for=api-key]").text == "API key"
        type_into(browser, "api-key", "wrong").submit()
        WebDriverWait(browser, 30).until(lambda b: "refused" in form.text)
        assert page_state(browser) == "key"
        type_into(browser, "api-key", "k1").submit()
        WebDriverWait(browser, 30).until(lambda b: page_state(b) == "ready")
        stored = browser.execute_script("return localStorage.getItem('ric-playground-api-key')")
        assert stored == "k1"
        send(browser)
        assert browser.find_element(By.ID, "column-0").get_attribute("data-state") == "done"
        # Stored: a new visit sends it from the start, the field stays hidden.
        load(browser, keyed)
        assert not browser.find_element(By.ID, "key-form").is_displayed()
        send(browser)
        assert browser.find_element(By.ID, "column-0").get_attribute("data-state") == "done"
        browser.execute_script("localStorage.clear()")


@pytest.fixture(scope="module")
def calibrated_server(tiny_calibrated, tmp_path_factory):
    """A calibrated run with a known calibration (obtained = 0.5 x desired), served."""
    run = calibrated_copy(tiny_calibrated, tmp_path_factory.mktemp("playground") / "cal")
    with running(run, max_tokens=24) as base:
        yield base


def test_a_calibrated_model_is_asked_for_rewards_to_obtain(calibrated_server, browser):
    server = calibrated_server
    load(browser, server)
    mapping = request(server, "/v1/models", method="GET")[2]["data"][0]["ric"]["mapping"]
    lowest, highest = mapping["reach_low"], mapping["reach_high"]
    sentence = browser.find_element(By.ID, "mapping").text
    for name, low, high in zip(NAMES, lowest, highest, strict=True):
        assert f"{name} {low:+.2f} to {high:+.2f}" in sentence
    Select(browser.find_element(By.ID, "steer-by")).select_by_value("obtain")
    assert not sliders(browser, 0)[0].is_displayed()
    target = [round(0.25 * low + 0.75 * high, 2) for low, high in zip(lowest, highest, strict=True)]
    for j, value in enumerate(target):
        type_into(browser, f"o-0-{j}", str(value))
    type_into(browser, "seed", "3")
    send(browser)
    section = browser.find_element(By.ID, "column-0")
    assert section.get_attribute("data-state") == "done"
    sent = sent_request(browser, 0)
    assert sent["rewards_obtained"] == target and "preference" not in sent
    status, _, answer = request(server, CHAT, sent | {"stream": False})
    assert status == 200, answer
    text = section.find_element(By.CLASS_NAME, "answer").get_property("textContent")
    assert text == answer["choices"][0]["message"]["content"]
    promised = ", ".join(
        f"{name} {value:+.2f} sd"
        for name, value in zip(NAMES, answer["ric"]["promised_rewards"], strict=True)
    )
    assert section.find_element(By.CLASS_NAME, "promised").text == f"expected to obtain: {promised}"

    # Beyond the reach: the server's refusal, which names the reach, is shown.
    type_into(browser, "o-0-0", str(highest[0] + 5))
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, 60).until(lambda b: page_state(b) == "done")
    assert section.get_attribute("data-state") == "error"
    assert "beyond this model's reach" in section.find_element(By.CLASS_NAME, "answer").text

    # Back to the preference: the sliders, and a preference sent.
    Select(browser.find_element(By.ID, "steer-by")).select_by_value("preference")
    assert sliders(browser, 0)[0].is_displayed()
    send(browser)
    assert "rewards_obtained" not in sent_request(browser, 0)
    assert sent_request(browser, 0)["preference"] == [0.5, 0.5]
