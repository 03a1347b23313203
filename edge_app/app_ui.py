"""The Kivy widgets of the FractureEdge app; their layout is ``edge_app/app.kv``. Import through
:func:`edge_app.app_cli.run_app`, which configures Kivy first.

The window: a toolbar (Open, Camera on Android, Export report, Recent, a busy indicator), the
image with its heatmap, box and legend (drawn by :mod:`edge_app.render`), a slice slider for
volumes, and a side panel with the verdict, the heatmap controls, the study's images and the
model's card, with a button to open another bundle. Inference runs on
:class:`edge_app.app.InferenceWorker`'s thread; its outcomes come back through ``Clock``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.base import ExceptionHandler, ExceptionManager
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.graphics.opengl import GL_RGBA, GL_UNSIGNED_BYTE, glReadPixels
from kivy.graphics.texture import Texture
from kivy.lang import Builder
from kivy.metrics import dp, sp
from kivy.properties import (
    BooleanProperty,
    ListProperty,
    NumericProperty,
    ObjectProperty,
    StringProperty,
)
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.label import Label
from kivy.uix.popup import Popup
from kivy.uix.togglebutton import ToggleButton
from kivy.uix.widget import Widget
from kivy.utils import escape_markup, get_hex_from_color, platform
from PIL import Image

from edge_app.app import (
    VERDICT_COLOURS,
    InferenceWorker,
    Outcome,
    band_text,
    display_copy,
    emit,
    export_report,
    model_rows,
    picture_rgba,
    reports_folder,
    user_message,
)
from edge_app.render import DEFAULT_OPACITY
from edge_app.runtime import StudyResult
from edge_app.text import DISCLAIMER, percent

ON_ANDROID = platform == "android"
NEUTRAL = (0.24, 0.27, 0.32, 1.0)
MUTED = "8d96a5"


def _lighter(colour: tuple[float, ...], amount: float = 0.35) -> tuple[float, ...]:
    """A verdict colour made readable as text on the dark panels."""
    return tuple(c + (1 - c) * amount for c in colour[:3]) + (1.0,)


class BodyLabel(Label):
    pass


class ModelKey(Label):
    """A row's name in the model panel, top-aligned with its value (which may wrap)."""


class ModelValue(BodyLabel):
    pass


class StudyEntry(ToggleButton):
    pass


class VerdictBadge(Label):
    band_colour = ListProperty(NEUTRAL)


class BusyIndicator(Widget):
    """A turning arc while :attr:`active`."""

    active = BooleanProperty(False)
    angle = NumericProperty(0)

    def on_active(self, _widget: Widget, active: bool) -> None:
        if active:
            Clock.schedule_interval(self._turn, 1 / 30)
        else:
            Clock.unschedule(self._turn)

    def _turn(self, _dt: float) -> None:
        self.angle = (self.angle + 12) % 360


class ExportDialog(Popup):
    """Pick the report folder with a folder-only chooser (no text field: Kivy's TextInput
    wants xclip/xsel on Linux and a keyboard on phones)."""

    folder = StringProperty()
    default_folder = StringProperty()
    start_folder = StringProperty()
    explanation = StringProperty(
        "Writes the shown image with its heatmap (PNG) and the result with the model's card "
        "(JSON) into the folder below. Nothing else leaves the device."
    )

    def __init__(self, on_confirm: Any, folder: Path, **kwargs: Any):
        self._on_confirm = on_confirm
        existing = next(p for p in (folder, *folder.parents) if p.is_dir())
        super().__init__(**kwargs)
        # after the chooser's own path events, which would overwrite the default folder
        self.start_folder = str(existing)
        self.folder = self.default_folder = str(folder)

    @staticmethod
    def no_files(_folder: str, _name: str) -> bool:
        return False

    def confirm(self) -> None:
        self.dismiss()
        self._on_confirm(Path(self.folder))


class OpenDialog(Popup):
    """A file and folder chooser: radiographs (the default), or a model bundle's folder."""

    start_folder = StringProperty()
    hint = StringProperty("A folder opens as one study: its images, or one DICOM series.")

    def __init__(self, on_choose: Any, **kwargs: Any):
        self._on_choose = on_choose
        kwargs.setdefault("title", "Open an image, a DICOM or NIfTI file, or a folder")
        super().__init__(**kwargs)

    def choose(self, selection: list[str]) -> None:
        if selection:
            self.dismiss()
            self._on_choose(Path(selection[0]))


Builder.load_file(str(Path(__file__).with_name("app.kv")))


class MainView(BoxLayout):
    """The window's content and its state: the loaded model, the shown analysis and image."""

    busy = BooleanProperty(False)
    wide = BooleanProperty(True)  # side panel beside the image; below it on a phone held upright
    has_result = BooleanProperty(False)
    status = StringProperty("Loading the model…")
    message = StringProperty("")
    placeholder = StringProperty(
        "Open a radiograph: a JPEG or PNG image, a DICOM or NIfTI file, or a folder.\n"
        "Open… (Ctrl+O), or drop a file onto the window."
    )
    image_index = NumericProperty(0)
    slice_count = NumericProperty(0)
    show_study_list = BooleanProperty(False)
    verdict_text = StringProperty("NO IMAGE")
    verdict_colour = ListProperty(NEUTRAL)
    probability_text = StringProperty("")
    detail_text = StringProperty("")
    band_text = StringProperty("")
    source_text = StringProperty("")
    recent_names = ListProperty()
    default_opacity = NumericProperty(DEFAULT_OPACITY)
    disclaimer = StringProperty(DISCLAIMER)
    result = ObjectProperty(None, allownone=True)  # the shown StudyResult

    __events__ = ("on_outcome",)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.worker = InferenceWorker(deliver=self._deliver)
        self.model_info: dict[str, Any] = {}
        self.recent: dict[str, Path] = {}
        self._pending = 0
        self._last_folder = Path.home()
        self._opened_at = 0.0
        self._bundle_folder = Path.home()
        self._display: dict[int, tuple[Any, Any]] = {}
        self._texture: Texture | None = None
        if not ON_ANDROID:
            self.ids.camera_button.parent.remove_widget(self.ids.camera_button)
        Window.bind(on_drop_file=self._on_drop_file, on_key_down=self._on_key_down)

    def on_size(self, _view: Widget, size: list[float]) -> None:
        self.wide = size[0] >= dp(760)

    def on_outcome(self, kind: str) -> None:
        """Dispatched after each outcome is on screen: "model", "verdict", "report" or
        "error"."""

    # ------------------------------------------------------------------ jobs

    def _deliver(self, callback: Any, outcome: Outcome) -> None:
        """Called on the worker thread: run ``callback`` on Kivy's thread."""
        Clock.schedule_once(lambda _dt: self._finish(callback, outcome))

    def _finish(self, callback: Any, outcome: Outcome) -> None:
        self._pending -= 1
        self.busy = self._pending > 0
        if not self.busy:
            self.status = ""
        callback(outcome)

    def _started(self, status: str) -> None:
        self._pending += 1
        self.busy = True
        self.status = status

    def load_model(self, bundle: Path, reanalyse: bool = False) -> None:
        """Load ``bundle``; with ``reanalyse``, score the shown input again with it, so no
        verdict stays on screen next to a model that did not make it."""
        bundle = Path(bundle).expanduser()
        self._bundle_folder = bundle.parent
        shown = self.result.source if reanalyse and self.result is not None else None
        self._started(f"Loading the model {bundle.name}…")
        self.worker.load_model(bundle, self._model_loaded)
        if shown is not None:
            self.open_path(Path(shown))

    def _model_loaded(self, outcome: Outcome) -> None:
        if outcome.message:
            self.model_info = {}
            self.band_text = ""
            self.ids.model_grid.clear_widgets()
            self.ids.model_grid.add_widget(ModelValue(text="No model loaded."))
            self.show_error(outcome.message)
            return
        self.model_info = outcome.value
        grid = self.ids.model_grid
        grid.clear_widgets()
        for label, value in model_rows(self.model_info):
            key, shown = ModelKey(text=label), ModelValue(text=escape_markup(value))
            shown.bind(height=key.setter("height"))
            grid.add_widget(key)
            grid.add_widget(shown)
        self.band_text = "Bands: " + band_text(self.model_info["thresholds"])
        emit("MODEL", self.model_info)
        self.dispatch("on_outcome", "model")

    def open_path(self, path: Path) -> None:
        path = Path(path).expanduser()
        self._remember(path)
        self._last_folder = path if path.is_dir() else path.parent
        self._started(f"Analysing {path.name}…")
        self._opened_at = time.perf_counter()
        self.worker.analyse(path, self._analysed)

    def _analysed(self, outcome: Outcome) -> None:
        if outcome.message:
            self.show_error(outcome.message)
            return
        result = outcome.value
        self.show_result(result)
        seconds = time.perf_counter() - self._opened_at
        self.status = f"{Path(result.source).name}: read and analysed in {seconds:.2f} s"
        emit("VERDICT", result.to_json())
        self.dispatch("on_outcome", "verdict")

    # ------------------------------------------------------------------ showing

    def show_error(self, message: str) -> None:
        """Show ``message`` in the banner and clear any result, so no verdict stays on screen
        next to a file it does not belong to."""
        emit("ERROR", message)
        self.clear_result()
        self.message = message
        self.dispatch("on_outcome", "error")

    def clear_result(self) -> None:
        self.result = None
        self.has_result = False
        self._display = {}
        self.slice_count = 0
        self.show_study_list = False
        self.ids.study_list.clear_widgets()
        self.verdict_text, self.verdict_colour = "NO IMAGE", list(NEUTRAL)
        self.probability_text = self.detail_text = self.source_text = ""
        self.ids.viewer.texture = None

    def show_result(self, result: StudyResult) -> None:
        self.clear_result()
        self.message = ""
        self.result = result
        self.has_result = True
        self.verdict_text = result.verdict_text.upper()
        self.verdict_colour = list(VERDICT_COLOURS[result.verdict])
        count = len(result.predictions)
        if result.is_study:
            what = "slices" if result.is_volume else "images"
            self.probability_text = (
                f"Fracture probability [b]{percent(result.probability)}[/b]\n"
                f"[size={int(sp(13))}][color={MUTED}]mean over {count} {what}[/color][/size]"
            )
        else:
            self.probability_text = f"Fracture probability [b]{percent(result.probability)}[/b]"
        self.slice_count = count if result.is_volume else 0
        self.show_study_list = result.is_study and not result.is_volume
        if self.show_study_list:
            self._fill_study_list(result)
        self.select_image(0, force=True)

    def _fill_study_list(self, result: StudyResult) -> None:
        for index, prediction in enumerate(result.predictions):
            colour = get_hex_from_color(_lighter(VERDICT_COLOURS[prediction.verdict]))
            name = escape_markup(Path(prediction.source).name)
            entry = StudyEntry(
                text=f"{index + 1}.  {name}   [color={colour}][b]"
                f"{percent(prediction.probability)}[/b][/color]",
                group="study",
                allow_no_selection=False,
            )
            entry.bind(on_release=lambda _entry, index=index: self.select_image(index))
            self.ids.study_list.add_widget(entry)

    def select_image(self, index: int, force: bool = False) -> None:
        if self.result is None:
            return
        index = max(0, min(int(index), len(self.result.predictions) - 1))
        if index == self.image_index and not force:
            return
        self.image_index = index
        prediction = self.result.predictions[index]
        lines = []
        if prediction.region:
            lines.append(f"Region: {escape_markup(prediction.region)}")
        if self.result.is_study:
            kind = "Slice" if self.result.is_volume else "Image"
            lines.append(
                f"{kind} {index + 1}: {percent(prediction.probability)} ({prediction.verdict_text})"
            )
        lines += [f"[color=f0b060]Note:[/color] {escape_markup(w)}" for w in prediction.warnings]
        self.detail_text = "\n".join(lines)
        self.source_text = escape_markup(prediction.source)
        for position, entry in enumerate(reversed(self.ids.study_list.children)):
            entry.state = "down" if position == index else "normal"
        self.redraw()

    def redraw(self, *_args: Any) -> None:
        """Draw the shown image with its heatmap, box and legend at the slider's opacity."""
        if self.result is None:
            return
        index = self.image_index
        prediction = self.result.predictions[index]
        if index not in self._display:
            self._display = {
                index: display_copy(self.result.radiographs[index].pixels, prediction.heatmap)
            }
        pixels, heatmap = self._display[index]
        rgba = picture_rgba(
            pixels,
            prediction,
            heatmap,
            self.ids.opacity_slider.value,
            shown=self.ids.heatmap_toggle.active,
        )
        height, width = rgba.shape[:2]
        if self._texture is None or tuple(self._texture.size) != (width, height):
            self._texture = Texture.create(size=(width, height), colorfmt="rgba")
            self._texture.flip_vertical()  # numpy rows run top-down, GL rows bottom-up
        # the array's own buffer: tobytes() would hold a second copy of the picture
        self._texture.blit_buffer(memoryview(rgba).cast("B"), colorfmt="rgba", bufferfmt="ubyte")
        viewer = self.ids.viewer
        if viewer.texture is self._texture:
            viewer.canvas.ask_update()
        else:
            viewer.texture = self._texture

    # ------------------------------------------------------------------ actions

    def choose_file(self) -> None:
        if self.busy:
            return
        if ON_ANDROID:
            from edge_app import app_android

            self._android(app_android.pick_file, self._picked_on_android)
            return
        OpenDialog(on_choose=self.open_path, start_folder=str(self._last_folder)).open()

    def choose_bundle(self) -> None:
        """Pick a model bundle's folder (the one holding model.tflite and model_card.json)."""
        if self.busy:
            return
        start = next(p for p in (self._bundle_folder, *self._bundle_folder.parents) if p.is_dir())
        OpenDialog(
            on_choose=lambda folder: self.load_model(folder, reanalyse=True),
            start_folder=str(start),
            title="Open a model bundle: its folder (model.tflite and model_card.json)",
            hint="Select the bundle's folder, then Open. The shown image is scored again.",
        ).open()

    def take_photo(self) -> None:
        from edge_app import app_android

        folder = Path(App.get_running_app().user_data_dir) / "photos"
        self._android(app_android.take_photo, folder, self._picked_on_android)

    def _android(self, action: Any, *args: Any) -> None:
        try:
            action(*args)
        except Exception as error:  # a Java exception from plyer must not close the app
            self.show_error(f"Android could not open that: {error}")

    def _picked_on_android(self, path: Path | None) -> None:
        """Runs on Android's UI thread: hand over to Kivy's."""

        def on_kivy_thread(_dt: float) -> None:
            if path is None:
                self.show_error(
                    "That file has no path on the device (cloud or app storage); copy it to "
                    "the device's storage first, or pick it from Files."
                )
            else:
                self.open_path(path)

        Clock.schedule_once(on_kivy_thread)

    def ask_export(self) -> None:
        if self.result is None or self.busy:
            return
        own_folder = Path(App.get_running_app().user_data_dir) / "reports" if ON_ANDROID else None
        self.export_dialog = ExportDialog(
            on_confirm=self.export_to, folder=reports_folder(own_folder)
        )
        self.export_dialog.open()

    def export_to(self, folder: Path) -> None:
        self._started("Writing the report…")
        self.worker.submit(
            self._exported,
            export_report,
            self.result,
            self.image_index,
            self.model_info,
            folder,
            self.ids.opacity_slider.value,
            self.ids.heatmap_toggle.active,
        )

    def _exported(self, outcome: Outcome) -> None:
        if outcome.message:
            emit("ERROR", outcome.message)
            self.message = f"The report was not written: {outcome.message}"
            self.dispatch("on_outcome", "error")
            return
        files = outcome.value
        emit("REPORT", {"image": str(files.image), "json": str(files.json)})
        self.status = f"Report written to {files.json.parent}"
        self.dispatch("on_outcome", "report")

    def open_recent(self, name: str) -> None:
        if name in self.recent and not self.busy:
            self.open_path(self.recent[name])
        self.ids.recent.text = "Recent"

    def _remember(self, path: Path) -> None:
        name = path.name or str(path)
        if self.recent.get(name, path) != path:
            name = f"{name} ({path.parent.name})"
        self.recent[name] = path
        self.recent_names = list(self.recent)

    def _on_drop_file(self, _window: Any, filename: bytes, *_position: Any) -> None:
        if not self.busy:
            self.open_path(Path(filename.decode("utf-8", "surrogateescape")))

    def _on_key_down(
        self, _window: Any, key: int, _scancode: int, codepoint: str | None, modifiers: list
    ) -> bool:
        if isinstance(Window.children[0], Popup):
            return False
        if codepoint == "o" and "ctrl" in modifiers:
            self.choose_file()
        elif codepoint == "e" and "ctrl" in modifiers:
            self.ask_export()
        elif codepoint == "h" and not modifiers:
            self.ids.heatmap_toggle.active = not self.ids.heatmap_toggle.active
        elif key in (275, 276):  # right, left: next and previous image or slice
            self.select_image(self.image_index + (1 if key == 275 else -1))
        else:
            return False
        return True


def window_picture(band_rows: int = 32) -> Image.Image:
    """The window's pixels as an RGB image, read back a band of rows at a time: reading the
    whole framebuffer at once (``Window.screenshot``) raised the app's peak memory by about
    8 MB under a software renderer, in bands by about 4."""
    width, height = (int(side) for side in Window.size)
    picture = Image.new("RGB", (width, height))
    for bottom in range(0, height, band_rows):  # GL counts rows from the bottom
        rows = min(band_rows, height - bottom)
        data = glReadPixels(0, bottom, width, rows, GL_RGBA, GL_UNSIGNED_BYTE)
        band = Image.frombytes("RGBA", (width, rows), data).convert("RGB")
        picture.paste(band.transpose(Image.Transpose.FLIP_TOP_BOTTOM), (0, height - bottom - rows))
    return picture


class ShowErrorAndContinue(ExceptionHandler):
    """An exception escaping a UI callback becomes a message in the window (a bug's traceback
    goes to the log, see :func:`edge_app.app.user_message`) instead of closing the app."""

    def __init__(self, view: MainView):
        self.view = view

    def handle_exception(self, exception: BaseException) -> int:
        if not isinstance(exception, Exception):  # KeyboardInterrupt, SystemExit
            return ExceptionManager.RAISE
        self.view.show_error(user_message(exception))
        return ExceptionManager.PASS


class FractureEdgeApp(App):
    """The app; ``screenshot``, ``exit_after`` and ``auto_export`` act once, after the first
    outcome on screen (the first path's verdict or error; the model, when no path was given)."""

    title = "FractureEdge"

    def __init__(
        self,
        bundle: Path,
        paths: list[Path],
        screenshot: Path | None = None,
        exit_after: float | None = None,
        auto_export: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.bundle, self.paths = bundle, paths
        self.screenshot, self.exit_after, self.auto_export = screenshot, exit_after, auto_export
        self._first_outcome_handled = False

    def build(self) -> MainView:
        view = MainView()
        view.bind(on_outcome=self._on_outcome)
        self._exception_handler = ShowErrorAndContinue(view)
        ExceptionManager.add_handler(self._exception_handler)
        return view

    def on_start(self) -> None:
        if ON_ANDROID:
            from edge_app import app_android

            self.root._android(app_android.request_permissions)
        self.root.load_model(self.bundle)
        for path in reversed(self.paths[1:]):
            self.root._remember(path)
        if self.paths:
            self.root.open_path(self.paths[0])

    def on_stop(self) -> None:
        ExceptionManager.remove_handler(self._exception_handler)
        self.root.worker.shutdown()

    def _on_outcome(self, view: MainView, kind: str) -> None:
        if self._first_outcome_handled or (kind == "model" and self.paths):
            return
        if kind == "verdict" and self.auto_export:
            self.auto_export = False
            self._press_export(view)
            return  # the report's outcome ("report" or "error") counts as the first
        self._first_outcome_handled = True
        delay = 0.0
        if self.screenshot:
            delay = 0.6  # a few frames, so the result is drawn and any dialog has closed
            Clock.schedule_once(self._save_screenshot, delay)
        if self.exit_after is not None:
            Clock.schedule_once(self._stop_when_idle, delay + 0.1 + self.exit_after)

    @staticmethod
    def _press_export(view: MainView) -> None:
        """The FRACTURE_EDGE_APP_AUTO_EXPORT hook: the buttons a user would press."""
        view.ids.export_button.trigger_action(0)
        dialog = view.export_dialog
        dialog.bind(on_open=lambda _dialog: dialog.ids.confirm.trigger_action(0))

    def _save_screenshot(self, _dt: float) -> None:
        target = self.screenshot.expanduser().resolve()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
                staged = Path(scratch) / "window.png"
                window_picture().save(staged, format="PNG")
                staged.replace(target)
        except OSError as error:
            emit("ERROR", f"the screenshot was not saved: {error}")
            return
        emit("SCREENSHOT", str(target))

    def _stop_when_idle(self, _dt: float) -> None:
        if self.root.busy:  # e.g. a report still being written
            Clock.schedule_once(self._stop_when_idle, 0.2)
        else:
            self.stop()
