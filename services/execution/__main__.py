from services.execution.service import main

raise SystemExit(main())
