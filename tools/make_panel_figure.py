"""Render Resources/UI/EdranFusion.ui with PySide6 (offscreen) into docs/figures/slicer_panel.png.

Slicer's own widgets (qMRML*, ctk*) do not exist outside Slicer, so they are swapped for the closest Qt widgets
before loading: qMRMLNodeComboBox -> QComboBox, ctkCollapsibleButton -> QGroupBox, ctkPathLineEdit -> QLineEdit.
Two states side by side: ready to apply, and running (progress and Cancel, options locked).
"""
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PySide6.QtCore import QBuffer, QByteArray, QIODevice  # noqa: E402
from PySide6.QtGui import QColor, QFont, QImage, QPainter  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402
from PySide6.QtWidgets import QApplication, QComboBox, QGroupBox, QLabel, QProgressBar, QPushButton  # noqa: E402

ROOT = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1])
SWAP = {"qMRMLWidget": "QWidget", "qMRMLNodeComboBox": "QComboBox", "ctkCollapsibleButton": "QGroupBox",
        "ctkPathLineEdit": "QLineEdit"}
DROP = {"nodeTypes", "showChildNodeTypes", "noneEnabled", "noneDisplay", "addEnabled", "removeEnabled",
        "renameEnabled", "collapsed", "nameFilters"}


def qt_only_ui(expand_advanced):
    tree = ET.parse(f"{ROOT}/Resources/UI/EdranFusion.ui")
    root = tree.getroot()
    for tag in ("customwidgets", "connections"):
        for element in root.findall(tag):
            root.remove(element)
    for widget in root.iter("widget"):
        original = widget.get("class")
        widget.set("class", SWAP.get(original, original))
        collapsed = False
        for prop in list(widget.findall("property")):
            if prop.get("name") == "collapsed":
                collapsed = prop.findtext("bool") == "true" and not expand_advanced
            if prop.get("name") in DROP:
                widget.remove(prop)
            elif original == "ctkCollapsibleButton" and prop.get("name") == "text":
                prop.set("name", "title")
        if original == "ctkCollapsibleButton":
            title = widget.find("property[@name='title']/string")
            title.text = ("\u25b8 " if collapsed else "\u25be ") + title.text
            if collapsed:
                widget.remove(widget.find("layout"))
    return ET.tostring(root)


def panel(running):
    data = QByteArray(qt_only_ui(expand_advanced=running))
    buffer = QBuffer(data)
    buffer.open(QIODevice.ReadOnly)
    form = QUiLoader().load(buffer)
    find = form.findChild
    for name, items in {
        "inputVolumeASelector": ["StrokeT2"], "inputVolumeBSelector": ["StrokeFLAIR"],
        "outputVolumeSelector": ["Create new volume"],
        "modelComboBox": ["general", "ct-mri", "spect-mri", "pet-mri", "Weights file"],
        "strategyComboBox": ["sfnn-max"], "deviceComboBox": ["auto"],
    }.items():
        combo = find(QComboBox, name)
        if combo is not None:
            combo.addItems(items)
    from PySide6.QtWidgets import QLineEdit
    find(QLineEdit, "weightsPathLineEdit").setEnabled(False)  # enabled only for the "Weights file" model
    label = find(QLabel, "deviceInUseLabel")
    if label is not None:
        label.setText("cpu")
    progress, cancel, apply_ = find(QProgressBar, "progressBar"), find(QPushButton, "cancelButton"), find(
        QPushButton, "applyButton")
    progress.setVisible(running)
    cancel.setVisible(running)
    apply_.setEnabled(not running)
    if running:
        progress.setValue(45)
        for name in ("inputsCollapsibleButton", "outputsCollapsibleButton", "fusionCollapsibleButton",
                     "advancedCollapsibleButton"):
            form.findChild(QGroupBox, name).setEnabled(False)
    form.resize(380, 520 if running else 420)
    return form


def main():
    app = QApplication([])
    app.setStyle("Fusion")
    app.setFont(QFont("DejaVu Sans", 9))
    shots = []
    for running in (False, True):
        form = panel(running)
        form.show()
        app.processEvents()
        shots.append((form.grab().toImage(), "Ready: inputs chosen, Apply enabled" if not running
                      else "Running: progress, Cancel, device in use"))
    width = sum(image.width() for image, _ in shots) + 30
    height = max(image.height() for image, _ in shots) + 40
    canvas = QImage(width, height, QImage.Format_RGB32)
    canvas.fill(QColor(236, 236, 236))
    painter = QPainter(canvas)
    painter.setFont(QFont("DejaVu Sans", 9, QFont.Bold))
    x = 10
    for image, caption in shots:
        painter.drawText(x, 20, caption)
        painter.drawImage(x, 30, image)
        x += image.width() + 10
    painter.end()
    os.makedirs(f"{ROOT}/docs/figures", exist_ok=True)
    canvas.save(f"{ROOT}/docs/figures/slicer_panel.png")


main()
