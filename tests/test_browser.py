"""End-to-end: the interactive notebooks in JupyterLab, driven by a real browser (tracker #7).

JupyterLab starts from this environment (``sys.executable -m jupyter lab``) on 127.0.0.1, on a free
port with a token, serving a temporary copy of ``notebooks/`` (no finished runs there, so the
notebooks use their untrained fallback models, and nothing in the repository is written).
Debian's Chromium (``/usr/bin/chromium``, never a downloaded browser) runs headless under
Playwright for Python, opens each notebook, runs all cells from the Run menu and works the widgets
through the page as a person would: typed slider readouts, the arrow keys on a slider handle,
dropdowns and a button. A figure's fingerprint is its ``<img>`` data URI; every control change must
replace it. Screenshots go to ``test-artifacts/browser/`` (gitignored) with the server's log.

Skipped, with the reason, only when Chromium or Playwright is missing
(``apt-get install chromium``; ``playwright`` is in requirements.txt).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
# What this closed network needs: no sandbox as root, no GPU, and none of Chromium's background
# connections (they are refused here, many at a time).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SERVER_START_S = 90  # JupyterLab answering on its port
KERNEL_START_S = 90  # a kernel importing torch on a busy 2-core machine
RUN_ALL_S = 180  # every cell of a notebook (a few seconds each on a 2-core CPU)
QUEUED_S = 30  # Run All Cells to the first queued cell (the front end marks it at once)
RUN_ALL_TRIES = 3
REDRAW_S = 60  # one widget change: one forward pass and one figure
STOP_S = 20  # graceful shutdown before SIGKILL

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install -r requirements.txt)")
expect = sync_api.expect


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[tuple[int, list[str]]]:
    """(pid, argv) of the direct children of ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if ppid == pid:
            found.append((int(entry.name), [a.decode(errors="replace") for a in argv if a]))
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as stopped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@dataclass
class Lab:
    """A running JupyterLab server started by this module."""

    url: str  # http://127.0.0.1:PORT
    token: str
    process: subprocess.Popen
    kernel_pids: set[int]  # every kernel seen under the server, stopped at teardown

    def api(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def kernels(self) -> list[tuple[int, list[str]]]:
        kernels = [(pid, argv) for pid, argv in _children(self.process.pid) if "ipykernel_launcher" in argv]
        self.kernel_pids.update(pid for pid, _ in kernels)
        return kernels


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    home = tmp_path_factory.mktemp("lab")
    root = home / "root"
    (root / "notebooks").mkdir(parents=True)
    for notebook in ("attention_maps.ipynb", "receptive_fields.ipynb", "lesson.ipynb"):
        shutil.copy(ROOT / "notebooks" / notebook, root / "notebooks" / notebook)
    # Private Jupyter folders: no user kernelspec or setting leaks in, nothing is written to ~.
    settings = home / "settings"
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # no news toast, no request
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),  # aalib, installed or not
    }
    env.pop("MPLBACKEND", None)  # the notebooks choose inline themselves
    port, token = _free_port(), secrets.token_hex(24)
    log = (ARTIFACTS / "jupyter.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            "--ServerApp.terminals_enabled=False",
            # nothing to fetch from the internet: no news, no update check, no PyPI extension manager
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            *(["--allow-root"] if os.geteuid() == 0 else []),  # CI runs as root
        ],
        cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, stopped as one
    )
    server = Lab(url=f"http://127.0.0.1:{port}", token=token, process=process, kernel_pids=set())
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"jupyter lab exited with {process.returncode}; see {ARTIFACTS / 'jupyter.log'}")
            try:
                server.api("/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer on 127.0.0.1:{port} within {SERVER_START_S} s")
                time.sleep(0.5)
        yield server
    finally:
        server.kernels()
        try:  # kernels run in sessions of their own: shut them down through the server first
            for kernel in server.api("/api/kernels"):
                server.api(f"/api/kernels/{kernel['id']}", method="DELETE")
        except Exception:
            pass
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(STOP_S)
        deadline = time.monotonic() + STOP_S
        while any(_alive(pid) for pid in server.kernel_pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in server.kernel_pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Debian's Chromium, headless, with a fresh empty profile; closed at the end of the module."""
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1500, "height": 1600}, timeout=60_000,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest) -> Iterator[object]:
    """A new tab per test; what it showed last is saved as ``<test>-last.png`` (the first thing to
    look at when a test fails)."""
    page = browser.new_page()
    page.set_default_timeout(REDRAW_S * 1000)
    try:
        yield page
    finally:
        try:
            page.screenshot(path=ARTIFACTS / f"{request.node.name}-last.png")
        finally:
            page.close()


# -- page helpers --------------------------------------------------------------------------------


def open_and_run_all(page, lab: Lab, notebook: str) -> None:
    """Open ``notebooks/<notebook>``, wait for its kernel, Run → Run All Cells, wait until idle."""
    # `reset`: a clean workspace, so the notebook of an earlier test is not restored beside it
    page.goto(f"{lab.url}/lab/tree/notebooks/{notebook}?reset&token={lab.token}")
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    expect(panel.locator(".jp-Cell").first).to_be_visible(timeout=SERVER_START_S * 1000)
    # The execution indicator reads 'idle' from the start, before the notebook has a kernel, and Run
    # All without a kernel clears every cell and runs none (seen in CI). So first the toolbar must
    # name the kernel ("No Kernel" before), then the server and the indicator must say idle.
    expect(panel.locator(".jp-Toolbar-kernelName")).to_have_text(re.compile(r"^Python 3"), timeout=KERNEL_START_S * 1000)
    deadline = time.monotonic() + KERNEL_START_S
    while [s["kernel"]["execution_state"] for s in lab.api("/api/sessions") if s["path"] == f"notebooks/{notebook}"] != ["idle"]:
        assert time.monotonic() < deadline, f"{notebook}: kernel not idle after {KERNEL_START_S} s: {lab.api('/api/sessions')}"
        time.sleep(0.2)
    idle = panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    expect(idle).to_be_attached(timeout=KERNEL_START_S * 1000)
    expect(page.locator(".jp-NotebookPanel")).to_have_count(1)
    code_cells = panel.locator(".jp-CodeCell")
    run_all_cells(page, panel, notebook)
    # every code cell has an execution count, and the kernel is idle again
    deadline = time.monotonic() + RUN_ALL_S
    while True:
        # text content, not inner text: Chromium renders no text for cells scrolled out of a long notebook
        prompts = code_cells.locator(".jp-InputArea-prompt").all_text_contents()
        if prompts and all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in prompts) and idle.count():
            break
        assert time.monotonic() < deadline, f"{notebook}: cells not all run after {RUN_ALL_S} s: prompts {prompts}"
        time.sleep(0.5)
    tracebacks = panel.locator(".jp-OutputArea-output", has_text="Traceback").all_inner_texts()
    assert not tracebacks, f"{notebook} raised:\n" + "\n".join(tracebacks)


def run_all_cells(page, panel, notebook: str) -> None:
    """Run → Run All Cells, and check that JupyterLab queued the cells (a prompt turns ``[*]:``).

    The caller has waited for the kernel (without one, Run All queues nothing). The item must be
    enabled before it is clicked, and a click that queued nothing (a menu that closed early on a
    loaded machine) is repeated, screenshot kept, at most ``RUN_ALL_TRIES`` times.
    """
    started = panel.locator(".jp-CodeCell .jp-InputArea-prompt", has_text=re.compile(r"\[(\*|\d+)\]:"))
    for attempt in range(1, RUN_ALL_TRIES + 1):
        page.keyboard.press("Escape")  # no menu left open by an earlier try
        panel.locator(".jp-Cell").first.click()  # the notebook is the current widget the Run menu acts on
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        item = page.locator(".lm-Menu-item", has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")))
        expect(item).not_to_have_class(re.compile(r"\blm-mod-disabled\b"))
        item.click()
        try:
            expect(started.first).to_be_attached(timeout=QUEUED_S * 1000)
            return
        except AssertionError:
            page.screenshot(path=ARTIFACTS / f"{Path(notebook).stem}-run-all-try{attempt}.png")
    pytest.fail(f"{notebook}: Run All Cells queued no cell in {RUN_ALL_TRIES} tries of {QUEUED_S} s")


def slider(scope, description: str):
    """The ipywidgets slider whose label reads ``description``."""
    return scope.locator(".widget-slider").filter(has=scope.page.locator(".widget-label", has_text=re.compile(rf"^{description}$")))


def control(scope, kind: str, description: str):
    """An ipywidgets control (``.widget-dropdown``, ``.widget-select-multiple``...) by its label."""
    return scope.locator(kind).filter(has=scope.page.locator(".widget-label", has_text=re.compile(rf"^{description}$")))


def selected(control) -> str:
    """The text of the option a dropdown shows (ipywidgets writes spaces as no-break spaces)."""
    text = control.locator("select").evaluate("select => select.options[select.selectedIndex].text")
    return text.replace("\xa0", " ")


def type_into_readout(scope, description: str, value: int) -> None:
    """Type a value into a slider's editable readout and press Enter, as a person would."""
    readout = slider(scope, description).locator(".widget-readout")
    readout.click()
    readout.press("ControlOrMeta+a")
    readout.press_sequentially(str(value))
    readout.press("Enter")
    expect(readout).to_have_text(str(value))


def figure_changes(figure, before: str, what: str) -> str:
    """Wait until the figure's data URI differs from ``before``; return the new one."""
    expect(figure, f"the figure did not change after {what}").not_to_have_attribute("src", before, timeout=REDRAW_S * 1000)
    after = figure.get_attribute("src")
    assert after.startswith("data:image/png;base64,") and len(after) > 2000, after[:80]
    return after


def explorer_of(page, description: str):
    """The explorer's outermost box: the first (outermost) ``.widget-vbox`` holding the named control."""
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    return panel.locator(".widget-vbox").filter(has=page.locator(".widget-label", has_text=re.compile(rf"^{description}$"))).first


def shot(page, element, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    element.scroll_into_view_if_needed()
    element.screenshot(path=path)
    page.screenshot(path=ARTIFACTS / f"{name}-page.png")
    return path


# -- the tests -----------------------------------------------------------------------------------


def test_attention_maps_notebook_in_jupyterlab(page, lab: Lab) -> None:
    open_and_run_all(page, lab, "attention_maps.ipynb")

    # the kernel is this environment's Python (the python3 kernelspec resolved to sys.executable)
    kernels = lab.kernels()
    assert kernels, "no kernel process under the JupyterLab server"
    for _, argv in kernels:  # `jupyter lab` re-executes as bin/python3, so compare environments, not paths
        prefix = subprocess.run([argv[0], "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True, check=True)
        assert prefix.stdout.strip() == sys.prefix, (argv, prefix.stdout)
    assert [s["kernel"]["name"] for s in lab.api("/api/sessions")] == ["python3"]

    explorer = explorer_of(page, "query x")
    for description in ("image", "head", "query y", "query x"):
        expect(slider(explorer, description)).to_be_visible()
    for description in ("model", "beside it", "layer"):
        expect(control(explorer, ".widget-dropdown", description).locator("select")).to_be_visible()
    # no runs in the temporary folder: the untrained fallback, AA beside LAA, the last attention layer
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    expect(panel.locator(".jp-OutputArea-output", has_text="No finished runs under 'runs/long_range'")).to_have_count(1)
    chosen = {d: selected(control(explorer, ".widget-dropdown", d)) for d in ("model", "beside it", "layer")}
    assert chosen["model"] == "simple_aacnn" and chosen["beside it"] == "simple_laacnn", chosen
    assert chosen["layer"].startswith("1: features.6.conv"), chosen
    figure = explorer.locator(".widget-output img").first  # the query's maps; then LAA's context maps
    expect(figure).to_be_visible()
    expect(explorer.locator(".widget-output img")).to_have_count(2)
    fingerprint = figure.get_attribute("src")
    assert fingerprint.startswith("data:image/png;base64,"), fingerprint[:80]
    expect(slider(explorer, "query x").locator(".widget-readout")).to_have_text("16")
    shot(page, explorer, "attention_maps-1-initial")

    type_into_readout(explorer, "query x", 5)  # a new query pixel: a new row of the attention matrix
    fingerprint = figure_changes(figure, fingerprint, "query x 16 -> 5")
    shot(page, explorer, "attention_maps-2-query_x5")

    head = slider(explorer, "head")
    head.locator(".noUi-handle").focus()
    head.locator(".noUi-handle").press("ArrowRight")  # the keyboard on the focused slider: head 0 -> 1
    expect(head.locator(".widget-readout")).to_have_text("1")
    figure_changes(figure, fingerprint, "head 0 -> 1")
    shot(page, explorer, "attention_maps-3-head1")

    # the static figures below the explorer: every head, then LAA's context maps
    expect(panel.locator(".jp-CodeCell").last.locator(".jp-OutputArea-output img")).to_have_count(2)


def test_receptive_fields_notebook_in_jupyterlab(page, lab: Lab) -> None:
    open_and_run_all(page, lab, "receptive_fields.ipynb")

    explorer = explorer_of(page, "layer")
    models = control(explorer, ".widget-select-multiple", "models").locator("select")
    layer = control(explorer, ".widget-dropdown", "layer").locator("select")
    expect(models).to_be_visible()
    expect(layer).to_be_visible()
    for description in ("ERF images", "attribution images", "IG steps"):
        expect(slider(explorer, description)).to_be_visible()
    figure = explorer.locator(".widget-output img").first  # the theoretical receptive fields
    expect(figure).to_be_visible()
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    # the static figures below the explorer: theoretical fields, ERFs, attributions
    expect(panel.locator(".jp-CodeCell").last.locator(".jp-OutputArea-output img")).to_have_count(3)
    fingerprint = figure.get_attribute("src")
    assert fingerprint.startswith("data:image/png;base64,"), fingerprint[:80]
    shot(page, explorer, "receptive_fields-1-initial")

    options = layer.locator("option").all_inner_texts()
    assert len(options) > 2, options
    layer.select_option(label=options[1])  # another highlighted layer
    fingerprint = figure_changes(figure, fingerprint, f"layer -> {options[1]!r}")
    shot(page, explorer, "receptive_fields-2-layer")

    names = models.locator("option").all_inner_texts()
    models.select_option(label=names[1:])  # leave the first model out
    figure_changes(figure, fingerprint, f"models -> {names[1:]}")
    shot(page, explorer, "receptive_fields-3-models")

    # the slow part, behind its button (seconds on a CPU with untrained models)
    explorer.locator("button", has_text="Compute ERF and attributions").click()
    slow = explorer.locator(".widget-output").last.locator("img")
    expect(slow).to_have_count(2, timeout=RUN_ALL_S * 1000)  # ERF heatmaps, then IG and Grad-CAM
    for index, name in enumerate(("erf", "attributions")):
        assert slow.nth(index).get_attribute("src").startswith("data:image/png;base64,")
        shot(page, slow.nth(index), f"receptive_fields-{4 + index}-{name}")


def test_lesson_notebook_in_jupyterlab(page, lab: Lab) -> None:
    open_and_run_all(page, lab, "lesson.ipynb")  # no cell raised

    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    # no docs/study and no benchmarks/ in the temporary folder: the lesson says so and draws the rest
    expect(panel.locator(".jp-OutputArea-output", has_text="the study has not been run")).to_have_count(1)
    expect(panel.locator(".jp-OutputArea-output", has_text="No recorded benchmark: analytic curves only")).to_have_count(1)
    expect(panel.locator(".jp-OutputArea-output", has_text="ones_out_max")).to_have_count(1)  # part 3's table
    # the maps of parts 1-3, the singular values, the row sums and the cost model
    expect(panel.locator(".jp-OutputArea-output img")).to_have_count(6)
    for source in panel.locator(".jp-OutputArea-output img").evaluate_all("images => images.map(i => i.src)"):
        assert source.startswith("data:image/png;base64,") and len(source) > 2000, source[:80]
    for notebook in ("attention_maps.ipynb", "receptive_fields.ipynb", "complexity.ipynb"):
        expect(panel.locator(f".jp-MarkdownCell a[href*='/notebooks/{notebook}?']").first).to_be_visible()  # beside the lesson
    shot(page, panel, "lesson-1-run")
