from tsds.cli import main

main()
