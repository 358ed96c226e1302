using System.Runtime.CompilerServices;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tests.BTree;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Xunit.Abstractions;

namespace Motr.Be.Tests.Tx;

/// <summary>
/// The transaction cycle allocates nothing in steady state: open, capture, close and awaiting persistence, as the
/// b+tree bench drives it, measured on the locality thread over everything it runs meanwhile (the other loops,
/// sealing groups, running the persistence continuations, turn ends); and work handed to a locality.
/// </summary>
/// <remarks>
/// Not measured: the shared <see cref="BufferPool"/> growing to the most group chunks out at once (a chunk is out
/// from its seal until placed, and placing pauses while a checkpoint computes its checksums: a few dozen, at times
/// ~100, in these loops). A miss allocates a chunk once, at a new peak, and the pool keeps it; the tests fill the
/// pool to such a peak first, so a run that happens to see a new peak cannot fail them. Also not here: waiting for
/// log space (the log full of reservations; a few hundred bytes a wait: the waiter, its task, the async begin).
/// </remarks>
public class TxAllocationTests(ITestOutputHelper output)
{
    private const int N = 10_000;
    /// <summary>Operations that each wait for a log write (an fdatasync): fewer, to keep the tests short.</summary>
    private const int Durable = 2_000;
    private const int Passes = 3;
    private const long Off = Engines.DataStart + 64;

    private static Task<TreeHost> Host(long logSize = 32 << 20)
    {
        for (int i = 0; i < 512; i++) BufferPool.Return(new byte[4096]); // kept: the 4 KiB class keeps thousands
        return TreeHost.Start(segmentSize: 32 << 20, logSize: logSize, segmentMaxSize: 256 << 20, verifyCaptures: false);
    }

    /// <summary>
    /// Runs <paramref name="apply"/> for 0..<paramref name="count"/>-1, each in its own transaction of
    /// <paramref name="credit"/>, on <paramref name="loops"/> async loops taking the next index in turn, each awaiting its
    /// transaction's persistence if <paramref name="wait"/> before going on (as the b+tree bench's writers do). Returns
    /// the bytes allocated on this thread (the locality's) from when every loop has started (made its first await: its
    /// state machine is boxed then, once per loop) to the end of the last operation: everything the locality ran
    /// meanwhile included.
    /// </summary>
    private static async Task<long> Loops(Segment seg, int count, int loops, bool wait, Func<int, TxCredit> credit, Action<Transaction, int> apply)
    {
        int next = 0, done = 0;
        long start = 0, end = 0;
        var tasks = new Task[loops];
        for (int w = 0; w < loops; w++) tasks[w] = Loop();
        await Task.WhenAll(tasks);
        return end - start;

        async Task Loop()
        {
            while (next < count)
            {
                int i = next++;
                if (i == loops) start = GC.GetAllocatedBytesForCurrentThread();
                TxPersistence persisted;
                using (var tx = await seg.BeginAsync(credit(i)))
                {
                    apply(tx, i);
                    persisted = tx.Close();
                }
                if (wait) await persisted;
                if (++done == count) end = GC.GetAllocatedBytesForCurrentThread();
            }
        }
    }

    /// <summary>
    /// Runs <paramref name="pass"/> once to warm up, then <see cref="Passes"/> times measured; the least of each of its
    /// results. An allocation per operation shows in every pass; a one-off (a list growing to the longest burst, the
    /// runtime compiling a method on this thread) in one at most.
    /// </summary>
    private static async Task<long[]> Least(Func<Task<long[]>> pass)
    {
        long[]? least = null;
        for (int p = 0; p <= Passes; p++)
        {
            var r = await pass();
            if (p == 0) continue;
            least ??= Enumerable.Repeat(long.MaxValue, r.Length).ToArray();
            for (int i = 0; i < r.Length; i++) least[i] = Math.Min(least[i], r[i]);
        }
        return least!;
    }

    private static void Ok(BTreeStatus st)
    {
        if (st != BTreeStatus.Ok) throw new InvalidOperationException(st.ToString());
    }

    private void Report(string path, long bytes, int ops) => output.WriteLine($"{path,-52} {bytes,8} B over {ops} ops ({bytes / (double)ops:F2} B/op)");

    [Theory]
    [InlineData(1, false)]
    [InlineData(1, true)]
    [InlineData(4, true)]
    public async Task Open_capture_close_and_awaiting_persistence_allocate_nothing(int loops, bool wait)
    {
        // Closed and not yet written, a transaction keeps a reservation of its worst case alone in a record (~9 KB
        // here): a burst of N closes must not fill the log, or the opens at its end wait for space (see the remarks).
        await using var h = await Host(logSize: wait ? 32 << 20 : 128 << 20);
        int count = wait ? Durable : N;
        var bytes = await h.Run(seg => Least(async () =>
        {
            long bytes = await Loops(seg, count, loops, wait, _ => TxCredit.Region(8) * 2, (tx, i) =>
            {
                tx.Capture<long>(Off)++;
                tx.Capture<long>(Off + 4096 + 8 * (i % 512)) = i;
            });
            await seg.FlushAsync(); // each pass starts with the log written
            return [bytes];
        }));
        Report($"begin, capture, close{(wait ? ", await persisted" : "")}; {loops} loop(s)", bytes[0], count);
        Assert.Equal(0, bytes[0]);
    }

    /// <summary>The b+tree bench's durable insert and delete (MotrKvStore.WriterAsync): one writer, or several sharing groups.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public async Task Durable_tree_inserts_and_deletes_allocate_nothing(int writers)
    {
        await using var h = await Host();
        var keys = new byte[Durable][];
        for (int i = 0; i < keys.Length; i++) keys[i] = Ops.Bytes(16, i);
        var value = new byte[100];
        var bytes = await h.Run(async seg =>
        {
            var t = await Ops.Create(seg, new BTreeConfig { KeySize = 16, ValueSize = 100 });
            // The tree holds other records too, so the inserts and deletes split and merge nodes.
            for (int i = 0; i < N; i++) await Ops.Insert(t, Ops.Bytes(16, Durable + i), value);
            var r = await Least(async () =>
            [
                await Loops(seg, Durable, writers, wait: true, _ => t.InsertCredit(16, 100), (tx, i) => Ok(t.Insert(tx, keys[i], value))),
                await Loops(seg, Durable, writers, wait: true, _ => t.DeleteCredit(), (tx, i) => Ok(t.Delete(tx, keys[i]))),
            ]);
            Assert.Equal(N, t.Count);
            return r;
        });
        Report($"durable insert, {writers} writer(s)", bytes[0], Durable);
        Report($"durable delete, {writers} writer(s)", bytes[1], Durable);
        Assert.Equal([0L, 0L], bytes);
    }

    [Fact]
    public async Task Posting_work_to_a_locality_allocates_nothing()
    {
        await using var h = await Host();
        var loc = h.Loc;
        var counter = new StrongBox<long>();
        Action<object?> work = static s => ((StrongBox<long>)s!).Value++;
        var bytes = await Least(async () =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < N; i++) loc.Post(work, counter);
            long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
            await loc.RunAsync(() => { }); // after every posted item
            return [bytes];
        });
        Assert.Equal((Passes + 1L) * N, counter.Value);
        Report("Locality.Post, on the posting thread", bytes[0], N);
        Assert.Equal(0, bytes[0]);
    }

    /// <summary>
    /// <see cref="Motr.Runtime.Locality.RunAsync(Func{Task})"/> and its overloads allocate their run and its task on the
    /// caller (what they return), and nothing on the locality for an operation that completes in its turn.
    /// </summary>
    [Fact]
    public async Task Running_an_operation_on_a_locality_allocates_nothing_there()
    {
        await using var h = await Host();
        var loc = h.Loc;
        var tasks = new Task[N];
        long sum = 0;
        Func<Task> operation = () => { sum++; return Task.CompletedTask; };
        Action action = () => sum++;
        Func<long> func = () => ++sum;
        var seven = Task.FromResult(7L);
        Func<Task<long>> operationT = () => seven;
        var forms = new (string Name, Func<Task> Start)[]
        {
            ("RunAsync(Func<Task>)", () => loc.RunAsync(operation)),
            ("RunAsync(Action)", () => loc.RunAsync(action)),
            ("RunAsync(Func<T>)", () => loc.RunAsync(func)),
            ("RunAsync(Func<Task<T>>)", () => loc.RunAsync(operationT)),
        };
        var bytes = await Least(async () =>
        {
            var r = new long[2 * forms.Length];
            for (int f = 0; f < forms.Length; f++)
            {
                long there = await loc.RunAsync(GC.GetAllocatedBytesForCurrentThread);
                long here = GC.GetAllocatedBytesForCurrentThread();
                for (int i = 0; i < N; i++) tasks[i] = forms[f].Start();
                r[2 * f] = GC.GetAllocatedBytesForCurrentThread() - here;
                // The locality runs them in order: they are all done (none had a continuation) when this runs.
                r[2 * f + 1] = await loc.RunAsync(GC.GetAllocatedBytesForCurrentThread) - there;
                Assert.All(tasks, t => Assert.True(t.IsCompletedSuccessfully));
            }
            return r;
        });
        for (int f = 0; f < forms.Length; f++)
        {
            Report($"{forms[f].Name}, on the caller", bytes[2 * f], N);
            Report($"{forms[f].Name}, on the locality", bytes[2 * f + 1], N);
        }
        Assert.Equal(new long[forms.Length], bytes.Where((_, i) => i % 2 == 1));
    }
}
