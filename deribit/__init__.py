"""The exchange edge: Deribit instrument names and metadata (``deribit.instruments``), channel
names (``deribit.channels``) and subscriptions (``deribit.subscriptions``), the JSON-RPC frame
codec (``deribit.codec``), the edge's constants (``deribit.constants``), the websocket
(``deribit.transport``), the link thread's loops (``deribit.link``) and the conversation with
the exchange (``deribit.session``). Knows no actor."""
