"""The playground (``GET /``) in a real headless Chromium on the tiny run: sliders named from the
run's objectives and kept on the simplex, the request the page sends, the streamed answer it
shows (the server's own answer), the compare mode. Skipped without selenium or Chromium."""

import json
import shutil

import pytest
from helpers import CHAT, NAMES, request, running

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


def test_playground_sends_its_sliders_and_shows_the_streamed_answer(server, browser):
    browser.get(server + "/")
    WebDriverWait(browser, 60).until(lambda b: page_state(b) == "ready")
    labels = browser.find_elements(By.CSS_SELECTOR, "#column-0 .slider label")
    assert [label.text for label in labels] == NAMES
    first, second = sliders(browser, 0)
    browser.execute_script(
        "arguments[0].value = 30;arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
        first,
    )
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
