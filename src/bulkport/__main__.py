from bulkport.cli import main

main()
