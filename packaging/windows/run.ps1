# LoRA Studio on Windows: create .venv, install the right PyTorch for this machine, then start the app.
# Run from the repository folder:  powershell -ExecutionPolicy Bypass -File packaging\windows\run.ps1
# Safe to run again: it only installs what is missing. (Written for Windows 10/11; not run in our CI.)
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..\..")
# Windows PowerShell 5.1 (the one Windows ships) has no ?: operator
if (Get-Command py -ErrorAction SilentlyContinue) { $python = "py -3.11" } else { $python = "python" }
if (-not (Test-Path ".venv\Scripts\python.exe")) { Invoke-Expression "$python -m venv .venv" }
$vpy = ".venv\Scripts\python.exe"
& $vpy -m pip install -q --upgrade pip
& $vpy -c "import torch" 2>$null
if ($LASTEXITCODE -ne 0) {
    # An NVIDIA driver ships nvidia-smi.exe; with it, take PyTorch's CUDA 12.8 build, else the CPU build.
    if (Get-Command nvidia-smi -ErrorAction SilentlyContinue) {
        & $vpy -m pip install "torch>=2.4" --index-url https://download.pytorch.org/whl/cu128
    } else {
        Write-Host "No NVIDIA GPU found: installing the CPU build of PyTorch (the demo works; real training is slow)."
        & $vpy -m pip install "torch>=2.4" --index-url https://download.pytorch.org/whl/cpu
    }
}
& $vpy -m pip install -q -e .
& ".venv\Scripts\lora-studio.exe" @args
