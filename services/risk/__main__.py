from services.risk.service import main

raise SystemExit(main())
