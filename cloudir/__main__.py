from cloudir.cli import main

main()
