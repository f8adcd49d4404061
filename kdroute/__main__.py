from kdroute.cli import main

main()
