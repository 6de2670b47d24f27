"""The labeling page in a real headless browser: Debian's chromium driven by Selenium.

Click and keyboard labeling, skip, undo, a reload that keeps the state, a second tab
answering the same image, and the next round started from the page. No browser is
downloaded: the system's /usr/bin/chromium and chromedriver are used (`.ci/install_browser`
installs them). Without them the test skips, except under CI=true where it fails.
"""

import os
import shutil
import threading
import time

import pytest

from crc_jax.project import Project, RoundSettings
from crc_jax.project.server import make_server
from image_folder import write_digits

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
KEYS = "1234567890"
SETTINGS = RoundSettings(model="mlp", width=32, epochs=1, steps_per_epoch=3, flip=False)


def browser_paths():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, None, "selenium is not installed (pip install selenium)"
    if not chromium or not driver:
        return None, None, "no chromium/chromedriver on PATH (run .ci/install_browser)"
    return chromium, driver, ""


@pytest.fixture
def browser():
    chromium, driver_path, missing = browser_paths()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the browser test cannot run: {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1000,760"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def served(tmp_path):
    truth = write_digits(tmp_path / "images", 40, broken=False)
    project, _ = Project.create(tmp_path / "proj", tmp_path / "images", image_size=8,
                                classes=CLASSES, progress=False)
    project.next_batch(6, RoundSettings(cold_start="random"))
    server = make_server(project, port=0, settings=SETTINGS, budget=4)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield project, {p: CLASSES[d] for p, d in truth.items()}, f"http://127.0.0.1:{server.port}/"
    server.shutdown()
    server.server_close()


def wait(predicate, timeout=300.0, what="condition"):   # a hang guard, not a speed limit
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value is not None and value is not False:  # image id 0 counts
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def text(driver, element_id):
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def current(driver, project):
    """The id of the image on screen, once it has loaded."""
    image = driver.execute_script(
        "const i = document.getElementById('image');"
        "return (i.complete && i.naturalWidth > 0 && document.getElementById('labeling')"
        ".style.display !== 'none') ? i.dataset.id : null;")
    return None if image is None else int(image)


def shows(driver, progress):
    return wait(lambda: text(driver, "progress") == progress, what=f"progress {progress}")


def test_label_page_in_chromium(browser, served, tmp_path):
    project, truth, url = served
    driver = browser
    driver.get(url)
    shows(driver, "0 / 6")
    first = wait(lambda: current(driver, project), what="first image")
    assert first == int(project.queue()[0]["id"])

    # A click on a class button.
    driver.find_element("css selector", f"button.cls[data-label='{truth[project.paths[first]]}']").click()
    shows(driver, "1 / 6")
    second = wait(lambda: current(driver, project) if current(driver, project) not in (None, first)
                  else None)
    # A number key: class k has key KEYS[k].
    driver.find_element("tag name", "body").send_keys(KEYS[CLASSES.index(truth[project.paths[second]])])
    shows(driver, "2 / 6")
    third = wait(lambda: current(driver, project)
                 if current(driver, project) not in (None, first, second) else None)
    driver.find_element("tag name", "body").send_keys("s")  # skip / unsure
    shows(driver, "3 / 6")
    driver.find_element("tag name", "body").send_keys("u")  # undo the skip
    shows(driver, "2 / 6")
    assert wait(lambda: current(driver, project)) == third
    assert project.answers() == {first: truth[project.paths[first]],
                                 second: truth[project.paths[second]]}
    assert [e["op"] for e in project.log.events()] == ["label", "label", "skip", "undo"]

    driver.refresh()  # a reload keeps everything
    shows(driver, "2 / 6")
    assert wait(lambda: current(driver, project)) == third

    # A second tab answers the image the first tab still shows.
    first_tab = driver.current_window_handle
    driver.switch_to.new_window("tab")
    driver.get(url)
    shows(driver, "2 / 6")
    assert wait(lambda: current(driver, project)) == third
    other = next(c for c in CLASSES if c != truth[project.paths[third]])
    driver.find_element("css selector", f"button.cls[data-label='{truth[project.paths[third]]}']").click()
    shows(driver, "3 / 6")
    driver.switch_to.window(first_tab)
    driver.find_element("css selector", f"button.cls[data-label='{other}']").click()
    wait(lambda: "already has the answer" in text(driver, "message"), what="conflict message")
    shows(driver, "3 / 6")  # it reloaded the state: the other tab's answer stands
    assert project.labels()[third] == truth[project.paths[third]]

    # Finish the queue, then run the next round from the page.
    for _ in range(3):
        image = wait(lambda: current(driver, project))
        before = text(driver, "progress")
        driver.find_element("css selector", f"button.cls[data-label='{truth[project.paths[image]]}']").click()
        wait(lambda: text(driver, "progress") != before, what="answer saved")  # noqa: B023
    shows(driver, "6 / 6")
    wait(lambda: driver.find_element("id", "done").is_displayed(), what="done panel")
    driver.save_screenshot(str(tmp_path / "done.png"))
    budget = driver.find_element("id", "budget")
    budget.clear()
    budget.send_keys("4")
    driver.find_element("id", "next-round").click()
    wait(lambda: "Round finished" in text(driver, "round-status") or
         "failed" in text(driver, "round-status"), timeout=300, what="the round to finish")
    assert "4 new images" in text(driver, "round-status"), text(driver, "round-status")
    shows(driver, "0 / 4")
    assert len(project.rounds()) == 2 and len(project.pending()) == 4
    given = [(e["id"], e.get("label")) for e in project.log.events() if e["op"] == "label"]
    assert len(given) == len({i for i, _ in given}) == 6  # every image answered once
    assert all(label == truth[project.paths[i]] for i, label in given)

    wait(lambda: current(driver, project), what="an image of the new queue")
    shot = os.environ.get("CRC_JAX_SCREENSHOT")
    driver.save_screenshot(shot or str(tmp_path / "page.png"))


def test_an_image_the_page_cannot_show_is_explained_on_the_page(browser, tmp_path):
    """A queued file gone from the folder: the page says why in place of the image (the
    server's 404 carries the reason), and the image can still be skipped."""
    write_digits(tmp_path / "images", 12, broken=False)
    project, _ = Project.create(tmp_path / "proj", tmp_path / "images", image_size=8,
                                classes=CLASSES, progress=False)
    project.next_batch(2, RoundSettings(cold_start="random"))
    server = make_server(project, port=0, settings=SETTINGS, budget=2)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        first = project.queue()[0]
        (project.images_root / first["path"]).unlink()
        browser.get(f"http://127.0.0.1:{server.port}/")
        wait(lambda: "cannot be shown" in text(browser, "unshown"), what="the reason")
        assert text(browser, "unshown").startswith(
            f"image {first['id']} ({first['path']}) cannot be shown: its file is missing from")
        browser.find_element("tag name", "body").send_keys("s")
        shows(browser, "1 / 2")
        wait(lambda: current(browser, project), what="the next image")
        assert not browser.find_element("id", "unshown").is_displayed()
        assert project.answers() == {int(first["id"]): None}
    finally:
        server.shutdown()
        server.server_close()
