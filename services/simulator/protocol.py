"""Message ids and the server versions at which fields appear, as the client library defines them.

Only versions from MIN_SERVED up are served, so features older than that are unconditional here.
"""
from __future__ import annotations

from enum import IntEnum

MIN_SERVED = 157          # oldest version we negotiate (ib_async asks for 157..178)
MAX_TEXT = 200            # newest version of the text wire format; 201+ is protobuf
MAX_SERVED = 226          # newest version served: ibapi 10.50.2's MAX_CLIENT_VER (pbwire.py)
DEFAULT_VERSION = 200

# field-presence thresholds (the client's MIN_SERVER_VER_* values we have to mirror)
DURATION = 158
POST_TO_ATS = 160
AUTO_CANCEL_PARENT = 162
FRACTIONAL_SIZE_SUPPORT = 163
SIZE_RULES = 164
ADVANCED_ORDER_REJECT = 166
PEGBEST_PEGMID_OFFSETS = 170
BOND_ISSUERID = 176
FA_PROFILE_DESUPPORT = 177
PENDING_PRICE_REVISION = 178
LAST_TRADE_DATE = 182
CUSTOMER_ACCOUNT = 183
PROFESSIONAL_CUSTOMER = 184
BOND_ACCRUED_INTEREST = 185
INELIGIBILITY_REASONS = 186
RFQ_FIELDS = 187
INCLUDE_OVERNIGHT = 189
UNDO_RFQ_FIELDS = 190
CME_TAGGING_FIELDS = 192
CME_TAGGING_FIELDS_IN_OPEN_ORDER = 193
ERROR_TIME = 194
FULL_ORDER_PREVIEW_FIELDS = 195
HISTORICAL_DATA_END = 196
CURRENT_TIME_IN_MILLIS = 197
SUBMITTER = 198
IMBALANCE_ONLY = 199
PARAMETRIZED_DAYS_OF_EXECUTIONS = 200


class In(IntEnum):
    """Requests the client sends (the client library's OUT)."""
    REQ_MKT_DATA = 1
    CANCEL_MKT_DATA = 2
    PLACE_ORDER = 3
    CANCEL_ORDER = 4
    REQ_OPEN_ORDERS = 5
    REQ_ACCT_DATA = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DATA = 9
    REQ_MKT_DEPTH = 10
    CANCEL_MKT_DEPTH = 11
    REQ_NEWS_BULLETINS = 12
    CANCEL_NEWS_BULLETINS = 13
    SET_SERVER_LOGLEVEL = 14
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_ALL_OPEN_ORDERS = 16
    REQ_MANAGED_ACCTS = 17
    REQ_HISTORICAL_DATA = 20
    CANCEL_HISTORICAL_DATA = 25
    REQ_CURRENT_TIME = 49
    REQ_REAL_TIME_BARS = 50
    CANCEL_REAL_TIME_BARS = 51
    REQ_GLOBAL_CANCEL = 58
    REQ_MARKET_DATA_TYPE = 59
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_POSITIONS_MULTI = 74
    CANCEL_POSITIONS_MULTI = 75
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_MARKET_RULE = 91
    REQ_PNL = 92
    CANCEL_PNL = 93
    REQ_PNL_SINGLE = 94
    CANCEL_PNL_SINGLE = 95
    REQ_TICK_BY_TICK_DATA = 97
    CANCEL_TICK_BY_TICK_DATA = 98
    REQ_COMPLETED_ORDERS = 99
    REQ_CURRENT_TIME_IN_MILLIS = 105


class Out(IntEnum):
    """Messages the server sends (the client library's IN)."""
    TICK_PRICE = 1
    TICK_SIZE = 2
    ORDER_STATUS = 3
    ERR_MSG = 4
    OPEN_ORDER = 5
    ACCT_VALUE = 6
    PORTFOLIO_VALUE = 7
    ACCT_UPDATE_TIME = 8
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    EXECUTION_DATA = 11
    MARKET_DEPTH = 12
    MARKET_DEPTH_L2 = 13
    MANAGED_ACCTS = 15
    HISTORICAL_DATA = 17
    TICK_GENERIC = 45
    TICK_STRING = 46
    CURRENT_TIME = 49
    REAL_TIME_BARS = 50
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    TICK_SNAPSHOT_END = 57
    MARKET_DATA_TYPE = 58
    COMMISSION_REPORT = 59
    POSITION_DATA = 61
    POSITION_END = 62
    ACCOUNT_SUMMARY = 63
    ACCOUNT_SUMMARY_END = 64
    POSITION_MULTI = 71
    POSITION_MULTI_END = 72
    ACCOUNT_UPDATE_MULTI = 73
    ACCOUNT_UPDATE_MULTI_END = 74
    TICK_REQ_PARAMS = 81
    HISTORICAL_DATA_UPDATE = 90
    MARKET_RULE = 93
    PNL = 94
    PNL_SINGLE = 95
    HISTORICAL_TICKS = 96
    HISTORICAL_TICKS_BID_ASK = 97
    HISTORICAL_TICKS_LAST = 98
    TICK_BY_TICK = 99
    COMPLETED_ORDER = 101
    COMPLETED_ORDERS_END = 102
    HISTORICAL_DATA_END = 108
    CURRENT_TIME_IN_MILLIS = 109


class Tick(IntEnum):
    BID_SIZE = 0
    BID = 1
    ASK = 2
    ASK_SIZE = 3
    LAST = 4
    LAST_SIZE = 5
    HIGH = 6
    LOW = 7
    VOLUME = 8
    CLOSE = 9
    LAST_TIMESTAMP = 45


# tick types a delayed (type 3/4) subscription uses instead of the live ones (IB's tick type
# table: 66 delayed bid .. 76 delayed open, 88 delayed last timestamp)
DELAYED_TICK = {0: 69, 1: 66, 2: 67, 3: 70, 4: 68, 5: 71, 6: 72, 7: 73, 8: 74, 9: 75, 14: 76,
                45: 88}

#: an account's market-data permission (SimConfig.market_data)
MARKET_DATA_PERMISSIONS = ("live", "delayed", "none")


class Code:
    """IB's error codes and texts, as TWS words them."""
    MAX_RATE = (100, "Max rate of messages per second has been exceeded:max={max} rec={rec} (3)")
    MAX_TICKERS = (101, "Max number of tickers has been reached")
    DUP_ORDER_ID = (103, "Duplicate order id")
    BAD_TICK = (110, "The price does not conform to the minimum price variation for this contract.")
    HMDS_ERROR = (162, "Historical Market Data Service error message:{text}")
    NO_SECDEF = (200, "No security definition has been found for the request")
    ORDER_REJECTED = (201, "Order rejected - reason:{reason}")
    ORDER_CANCELLED = (202, "Order Canceled - reason:{reason}")
    NO_TICKER = (300, "Can't find EId with tickerId:{id}")
    MAX_DEPTH = (309, "Max number of {n} market depth requests has been reached")
    NO_DEPTH = (310, "Can't find the subscribed market depth with tickerId:{id}")
    READ_ERROR = (320, "Error reading request. {text}")
    VALIDATE_ERROR = (321, "Error validating request.-'{what}' : cause - {cause}")
    DUP_TICKER = (322, "Error processing request.-'{what}' : cause - Duplicate ticker id")
    CLIENT_ID_IN_USE = (326, "Unable to connect as the client id is already in use. Retry with a unique client id.")
    # market data without live permission; texts as paper gateways send them (docs/simulator.md)
    NOT_SUBSCRIBED = (354, "Requested market data is not subscribed.")
    NEEDS_API_SUBSCRIPTION = (10089, "Requested market data requires additional subscription for "
                                     "API. See link in 'Market Data Connections' dialog for more "
                                     "details.{suffix}")
    DISPLAYING_DELAYED = (10167, "Requested market data is not subscribed. Displaying delayed "
                                 "market data.")
    DELAYED_NOT_ENABLED = (10168, "Requested market data is not subscribed. Delayed market data "
                                  "is not enabled.")
    NO_HIST_QUERY = (366, "No historical data query found for ticker id:{id}")
    CONN_LOST = (1100, "Connectivity between IB and Trader Workstation has been lost.")
    CONN_RESTORED_LOST = (1101, "Connectivity between IB and Trader Workstation has been restored - data lost.")
    CONN_RESTORED_KEPT = (1102, "Connectivity between IB and Trader Workstation has been restored - data maintained.")
    MD_FARM_BROKEN = (2103, "Market data farm connection is broken:usfarm")
    MD_FARM_OK = (2104, "Market data farm connection is OK:usfarm")
    HMDS_BROKEN = (2105, "HMDS data farm connection is broken:ushmds")
    HMDS_OK = (2106, "HMDS data farm connection is OK:ushmds")
    SECDEF_BROKEN = (2157, "Sec-def data farm connection is broken:secdefnj")
    SECDEF_OK = (2158, "Sec-def data farm connection is OK:secdefnj")
    CANT_CANCEL_UNKNOWN = (10147, "OrderId {id} that needs to be cancelled is not found.")
    CANT_CANCEL = (10148, "OrderId {id} that needs to be cancelled cannot be cancelled, state: {state}.")
    MAX_TBT = (10190, "Max number of tick-by-tick requests has been reached.")
    COMPETING_SESSION = (10197, "No market data during competing live session")
