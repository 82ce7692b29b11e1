"""The command-line apps, thin Hydra apps over the library (nothing in the library imports them).

    train.py      devinterp-train      train a model, with callbacks live or in a follower
    analyze.py    devinterp-analyze    callbacks over saved checkpoints (local, processes, Ray; or following a run)
    report.py     devinterp-report     stages, figures and the HTML report of a run
    dashboard.py  devinterp-dashboard  the live dashboard over run directories
    demo.py       make demo            two runs that show both stage types
    main.py       devinterp <command>  one entry point for the four tools
    configs.py    where the YAML configs are (package data) and the schemas they extend
    errors.py     bad input: one line naming the key and value, exit code 2, before anything runs
"""
