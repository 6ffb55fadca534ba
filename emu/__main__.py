from emu.cli.commands import main

main()
