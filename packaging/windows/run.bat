@echo off
rem Double-click to set up (first time) and start LoRA Studio. See run.ps1 for what it does.
powershell -NoProfile -ExecutionPolicy Bypass -File "%~dp0run.ps1" %*
