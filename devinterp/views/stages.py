"""How the report and the dashboard show a stage: one colour per type (see `devinterp.transitions`:
A, the LLC rises; B, it falls; other, a plateau)."""
STAGE_COLORS = {"A": "#1f77b4", "B": "#ff7f0e", "other": "#7f7f7f"}
