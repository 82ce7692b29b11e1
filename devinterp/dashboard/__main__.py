from devinterp.dashboard.cli import main

main()
