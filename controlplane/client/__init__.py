"""`berth stack ...`, `berth token ...` and `berth audit`: the user API from a terminal.

    berth stack apply -f stack.toml [--yes]   show the field diff the file would make,
                                        ask on a terminal, then create or update the stack
    berth stack list | get NAME | versions NAME | refresh NAME | rollback NAME VERSION
    berth stack diff NAME A B | delete NAME
    berth audit [--actor A] [--stack S] [--action X] [--since T] [--until T]
    berth notify list | add NAME --kind K ... | remove | test | log NAME | events
    berth token create --stack NAME [--ttl SECONDS]   an install token (stdout), with the
                                                      install command on stderr

The control plane is $BERTH_URL (default http://127.0.0.1:8000) and the admin token
$BERTH_TOKEN. A stack is named by name or id. Exit status: 0 ok, 1 the API refused, 2 usage.

One module per command: `stack` (stack and token), `audit`, `notify`; `api` is the HTTP
client they share.
"""

from controlplane.client.api import DEFAULT_URL, Client, ClientError
from controlplane.client.audit import main_audit
from controlplane.client.notify import NOTIFY_COMMANDS, main_notify
from controlplane.client.stack import STACK_COMMANDS, TOKEN_COMMANDS, main_stack, main_token

__all__ = [
    "DEFAULT_URL",
    "NOTIFY_COMMANDS",
    "STACK_COMMANDS",
    "TOKEN_COMMANDS",
    "Client",
    "ClientError",
    "main_audit",
    "main_notify",
    "main_stack",
    "main_token",
]
