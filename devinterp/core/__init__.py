"""The ground floor: what every other package may use, importing nothing of devinterp.

    errors.py    configuration errors: one line naming the key and the value
    devices.py   which torch device `device=auto|cpu|cuda` means
    progress.py  progress bars that count the measurements still to come
    params.py    parameter selectors (names, globs, masks) shared by the estimators
    logfile.py   the `devinterp` logger writing to a run's log file
"""
