"""The web console in a real headless Chromium (Debian's, driven over WebDriver by Selenium
through Debian's chromedriver) against a real `autoglm serve` with the demo model."""

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from conftest import DEMO_MODEL, TARGET, Server

SAMPLES = ("weather", "calculator", "units", "notes", "http", "text")
SHOTS = TARGET / "console"
WAIT_S = 60


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    """One server with every sample plugin but `units` (the hot-reload test adds it) and the
    demo model."""
    server = Server(tmp_path_factory.mktemp("console"), ("--model", str(DEMO_MODEL)))
    for name in SAMPLES:
        if name not in ("weather", "calculator", "units"):
            server.add_plugin(name)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("keyed"), config='[[server.keys]]\nname = "console"\ntoken = "right-key"\n')
    yield server
    server.stop()


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    # CI runs as root, where Chromium's own sandbox cannot start.
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))
    yield driver
    driver.quit()


def wait(driver, condition, message):
    return WebDriverWait(driver, WAIT_S).until(lambda d: condition(d), message=message)


def cards(driver):
    return {c.get_attribute("data-tool") for c in driver.find_elements(By.CSS_SELECTOR, "#tool-list .card")}


def card(driver, tool):
    return driver.find_element(By.CSS_SELECTOR, f'#tool-list .card[data-tool="{tool}"]')


def open_console(driver, server, page="tools"):
    driver.get(f"{server.base}/#{page}")
    wait(driver, lambda d: d.execute_script("return document.body.dataset.ready === 'true'"), "the page never started")


def api_tools(server):
    with urllib.request.urlopen(server.base + "/v1/tools") as reply:
        return {t["id"] for t in json.load(reply)["data"]}


def test_the_page_loads_without_errors_and_from_this_origin_only(console, browser):
    with urllib.request.urlopen(console.base + "/") as reply:
        assert reply.headers["Content-Security-Policy"].startswith("default-src 'self'")
    open_console(browser, console)
    wait(browser, lambda d: cards(d) == api_tools(console), "the tools never showed")
    timing = browser.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "return {interactive: n.domInteractive, loaded: n.loadEventEnd};"
    )
    requests, weight = [], 0
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
        if message["method"] == "Network.loadingFinished":
            weight += message["params"]["encodedDataLength"]
    outside = [url for url in requests if not url.startswith(console.base + "/")]
    assert requests and not outside, f"requests to other origins: {outside}"
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not errors, errors
    page = sum(
        len(urllib.request.urlopen(console.base + path).read())
        for path in ("/", "/ui/style.css", "/ui/app.js", "/ui/api.js", "/ui/form.js", "/ui/metrics.js", "/ui/icon.svg")
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "load.json").write_text(json.dumps({"page_bytes": page, "transferred_bytes": weight, **timing}, indent=2))
    print(f"console: {page} bytes of page, {weight} bytes on the wire, interactive at {timing['interactive']:.0f} ms")


def test_every_sample_tool_is_listed_and_the_weather_form_calls_it(console, browser):
    open_console(browser, console)
    wait(browser, lambda d: {"weather.get_weather", "calculator.evaluate", "notes.write"} <= cards(d), "tools missing")
    assert cards(browser) == api_tools(console)
    assert {t.split(".")[0] for t in cards(browser)} == set(SAMPLES) - {"units"}
    weather = card(browser, "weather.get_weather")
    location = weather.find_element(By.CSS_SELECTOR, 'input[data-path="/location"]')
    location.send_keys("Beijing")
    weather.find_element(By.CSS_SELECTOR, "form.try button[type=submit]").click()
    result = wait(browser, lambda d: weather.find_elements(By.CSS_SELECTOR, ".outcome pre.result"), "no result")[0]
    called = json.loads(result.text)
    assert called["city"] == "Beijing" and isinstance(called["temperature"], int), called
    usage = weather.find_element(By.CSS_SELECTOR, ".outcome dl.usage").text
    assert "fuel" in usage and "trace" in usage and "ms" in usage, usage

    location.clear()
    location.send_keys(" ")
    weather.find_element(By.CSS_SELECTOR, "form.try button[type=submit]").click()
    error = wait(browser, lambda d: weather.find_elements(By.CSS_SELECTOR, ".outcome .error"), "no error")[0]
    assert error.find_element(By.CSS_SELECTOR, "code.kind").text == "invalid_arguments"
    assert "location" in error.text
    assert location.get_attribute("aria-invalid") is not None, "the refused field is marked"
    browser.save_screenshot(str(SHOTS / "tools-desktop.png"))
    browser.set_window_size(390, 844)
    browser.save_screenshot(str(SHOTS / "tools-phone.png"))
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"), "no sideways scrolling"


def test_a_chat_shows_the_tool_step_then_the_answer(console, browser):
    open_console(browser, console, "chat")
    # Note when the first tool step and the first answer text appear.
    browser.execute_script(
        "window.seen = {};"
        "new MutationObserver(() => {"
        "  const now = performance.now();"
        "  if (document.querySelector('#chat-log .step.tool')) window.seen.tool ??= now;"
        "  if (document.querySelector('#chat-log .answer')?.textContent) window.seen.answer ??= now;"
        "}).observe(document.querySelector('#chat-log'), {subtree: true, childList: true, characterData: true});"
    )
    browser.find_element(By.ID, "show-prompt").click()
    box = browser.find_element(By.ID, "chat-input")
    box.send_keys("What's the weather in Beijing?")
    box.send_keys(Keys.ENTER)
    turn = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chat-log .message.assistant:not([aria-busy])"), "no answer")[0]
    step = turn.find_element(By.CSS_SELECTOR, ".step.tool")
    assert step.get_attribute("data-tool") == "weather.get_weather"
    assert json.loads(step.find_element(By.CSS_SELECTOR, "pre.arguments").text) == {"location": "Beijing"}
    result = json.loads(step.find_element(By.CSS_SELECTOR, "pre.result").text)
    answer = turn.find_element(By.CSS_SELECTOR, ".answer").text
    assert f"{result['temperature']}°C" in answer, answer
    seen = browser.execute_script("return window.seen")
    assert seen["tool"] <= seen["answer"], seen
    models = turn.find_elements(By.CSS_SELECTOR, ".step.model")
    assert len(models) == 2 and "tokens" in models[0].text
    prompt = models[0].find_element(By.CSS_SELECTOR, "details.prompt pre").get_attribute("textContent")
    assert "get_weather" in prompt and "What's the weather in Beijing?" in prompt, prompt[:400]
    browser.save_screenshot(str(SHOTS / "chat-desktop.png"))
    browser.set_window_size(390, 844)
    browser.save_screenshot(str(SHOTS / "chat-phone.png"))


def test_a_plugin_copied_in_appears_and_a_failed_reload_shows_why(console, browser):
    open_console(browser, console)
    wait(browser, lambda d: "weather.get_weather" in cards(d), "tools missing")
    browser.execute_script("window.notReloaded = true")
    console.add_plugin("units")
    wait(browser, lambda d: any(t.startswith("units.") for t in cards(d)), "units never appeared")

    browser.find_element(By.CSS_SELECTOR, 'nav a[href="#plugins"]').click()
    broken = console.plugins / "units.partial"
    broken.write_bytes(b"\0asm this is not a component")
    broken.rename(console.plugins / "units.wasm")
    failed = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#plugin-failed [data-failed="units"]'), "no failure shown")[0]
    assert "did not load" in failed.text and "previous version keeps serving" in failed.text, failed.text
    assert failed.find_element(By.CSS_SELECTOR, "code.kind").text == "incompatible_plugin"
    assert browser.find_elements(By.CSS_SELECTOR, '#plugin-list [data-plugin="units"]'), "the old units still serves"
    assert browser.execute_script("return window.notReloaded === true"), "the page was not reloaded"
    browser.save_screenshot(str(SHOTS / "plugins-desktop.png"))


def test_a_server_with_keys_asks_for_one_and_refuses_a_wrong_one(keyed, browser):
    browser.get(keyed.base + "/")
    dialog = wait(browser, lambda d: d.find_element(By.ID, "key-dialog") if d.find_element(By.ID, "key-dialog").is_displayed() else None, "no key asked")
    assert "needs an API key" in dialog.text
    key = browser.find_element(By.ID, "key-input")
    key.send_keys("wrong-key", Keys.ENTER)
    wait(browser, lambda d: "refused" in d.find_element(By.ID, "key-reason").text, "a wrong key was not refused")
    assert not cards(browser)
    key.send_keys("right-key", Keys.ENTER)
    wait(browser, lambda d: "weather.get_weather" in cards(d), "the right key did not work")
    assert not browser.find_element(By.ID, "key-dialog").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('autoglm.key')") == "right-key"
    # Console errors here are the two 401s the page answered with a dialog.
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"]]
    assert not errors, errors


def test_the_tasks_and_metrics_pages_show_what_the_server_holds(console, browser):
    spec = {"spec": {"name": "forecast", "stages": [
        {"name": "today", "tool": "weather.get_weather", "args": {"location": "Paris"}},
        {"name": "sum", "tool": "calculator.evaluate", "args": {"expression": "1 + 2"}},
    ]}}
    submit = urllib.request.Request(console.base + "/v1/tasks", data=json.dumps(spec).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(submit) as reply:
        task = json.load(reply)["id"]
    refused = urllib.request.Request(console.base + "/v1/tools/weather.get_weather/call", data=b'{"location": " "}')
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(refused)
    open_console(browser, console, "tasks")
    link = wait(browser, lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, "#task-list button") if b.text == "forecast"], "task not listed")[0]
    link.click()
    detail = wait(browser, lambda d: d.find_element(By.ID, "task-detail") if "succeeded" in d.find_element(By.ID, "task-detail").text else None, "task never succeeded")
    assert task in detail.text and "today" in detail.text and "Paris" in detail.text, detail.text

    browser.find_element(By.CSS_SELECTOR, 'nav a[href="#metrics"]').click()
    row = wait(browser, lambda d: [r for r in d.find_elements(By.CSS_SELECTOR, "#metric-tools tbody tr") if r.text.startswith("weather.get_weather")], "no tool row")[0]
    calls, p50, p99 = row.find_elements(By.TAG_NAME, "td")[1:]
    assert int(calls.text) >= 1 and p50.text.endswith("ms") and p99.text.endswith("ms"), row.text
    wait(browser, lambda d: "calls/s" in d.find_element(By.CSS_SELECTOR, "#chart-calls .figure").text, "no rate drawn")
    assert "invalid_arguments" in browser.find_element(By.ID, "metric-errors").text
    browser.save_screenshot(str(SHOTS / "metrics-desktop.png"))
