from bci.cli import main

main()
