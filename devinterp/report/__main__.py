from devinterp.report.cli import main

main()
