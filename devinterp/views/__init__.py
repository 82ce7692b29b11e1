"""What people look at: read-only views of run directories.

    report/      the post-hoc report of a run: stages, figures, a self-contained HTML page
    dashboard/   the live local dashboard over run directories (Dash)
"""
