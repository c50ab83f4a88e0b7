"""The exchange: Deribit instrument names and metadata (``deribit.instruments``), channel names
(``deribit.channels``), the JSON-RPC frame codec (``deribit.codec``), and ``simulator``,
a local Deribit. Knows no actor."""
