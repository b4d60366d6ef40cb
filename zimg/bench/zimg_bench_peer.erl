%% The Erlang/OTP peer of zimg.bench.actors: the same two figures between two BEAM nodes.
%%
%% zimg.bench.erlang compiles this with erlc at run time and starts two nodes on loopback:
%%
%%   echo node:   erl ... -run zimg_bench_peer serve DeadlineMs
%%   driver node: erl ... -run zimg_bench_peer drive EchoNode Rounds WarmupRounds Messages
%%                        WarmupMessages
%%
%% The driver spawns echo/0 on the echo node, times Rounds round trips of {echo, Self, I}
%% (answered {echo, I}) after WarmupRounds untimed ones, then sends a {count, Self, N}
%% announcement and N one-way {m, I} messages to it (a warm-up batch, then Messages), and
%% times the batch until {sunk, N} comes back: the shapes zimg's pinger and blaster send.
%% It prints one line that Python parses (see zimg.bench.erlang.parse_line) and halts 0, or
%% prints the failure to stderr and halts 1.
%% The echo node halts when the driver's node goes away, or at its deadline.
-module(zimg_bench_peer).
-export([serve/1, drive/1, echo/0]).

-define(REPLY_TIMEOUT_MS, 10000).

serve([DeadlineMs]) ->
    ok = net_kernel:monitor_nodes(true, [{node_type, all}]),
    erlang:send_after(list_to_integer(DeadlineMs), self(), deadline),
    serve_loop().

serve_loop() ->
    receive
        {nodedown, _Node, _Info} -> halt(0);
        deadline -> halt(3);
        _ -> serve_loop()
    end.

echo() ->
    receive
        {echo, From, I} ->
            From ! {echo, I},
            echo();
        {count, From, N} ->
            sink(N),
            From ! {sunk, N},
            echo();
        stop ->
            ok
    end.

sink(0) ->
    ok;
sink(N) ->
    receive
        _ -> sink(N - 1)
    after ?REPLY_TIMEOUT_MS -> exit(sink_timeout)
    end.

drive(Args) ->
    try measure(Args) of
        Line ->
            io:put_chars(Line),
            halt(0)
    catch
        Class:Reason ->
            io:format(standard_error, "driver failed: ~p:~p~n", [Class, Reason]),
            halt(1)
    end.

measure([EchoNode, Rounds, WarmupRounds, Messages, WarmupMessages]) ->
    process_flag(trap_exit, true),
    Node = list_to_atom(EchoNode),
    [R, WR, M, WM] = [list_to_integer(X) || X <- [Rounds, WarmupRounds, Messages, WarmupMessages]],
    connect(Node, 200),
    Echo = spawn_link(Node, ?MODULE, echo, []),
    _ = ping(Echo, WR, []),
    Started = erlang:monotonic_time(),
    Samples = ping(Echo, R, []),
    RttTotal = erlang:monotonic_time() - Started,
    blast(Echo, WM),
    BlastStarted = erlang:monotonic_time(),
    blast(Echo, M),
    OneWay = erlang:monotonic_time() - BlastStarted,
    Echo ! stop,
    Ns = fun(T) -> erlang:convert_time_unit(T, native, nanosecond) end,
    io_lib:format(
        "zimg-erlang-peer otp=~s rtt_bytes=~b one_way_bytes=~b rounds=~b rtt_total_ns=~b "
        "messages=~b one_way_ns=~b samples_ns=~s~n",
        [
            erlang:system_info(otp_release),
            byte_size(term_to_binary({echo, self(), R div 2})),
            byte_size(term_to_binary({m, M div 2})),
            R,
            Ns(RttTotal),
            M,
            Ns(OneWay),
            lists:join(",", [integer_to_list(Ns(S)) || S <- Samples])
        ]
    ).

%% Retry: the echo node may still be starting.
connect(Node, 0) ->
    exit({cannot_reach, Node});
connect(Node, Tries) ->
    case net_kernel:connect_node(Node) of
        true ->
            ok;
        _ ->
            timer:sleep(25),
            connect(Node, Tries - 1)
    end.

ping(_Echo, 0, Acc) ->
    Acc;
ping(Echo, N, Acc) ->
    T0 = erlang:monotonic_time(),
    Echo ! {echo, self(), N},
    receive
        {echo, N} -> ok;
        {'EXIT', Echo, Why} -> exit({echo_died, Why})
    after ?REPLY_TIMEOUT_MS -> exit(echo_timeout)
    end,
    ping(Echo, N - 1, [erlang:monotonic_time() - T0 | Acc]).

blast(Echo, N) ->
    Echo ! {count, self(), N},
    send_n(Echo, N),
    receive
        {sunk, N} -> ok;
        {'EXIT', Echo, Why} -> exit({echo_died, Why})
    after max(?REPLY_TIMEOUT_MS, 2 * N) -> exit(sink_timeout)  % 500 messages/s at least
    end.

send_n(_Echo, 0) ->
    ok;
send_n(Echo, N) ->
    Echo ! {m, N},
    send_n(Echo, N - 1).
