using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Be.Tests.Api;

/// <summary>A cancellation token given to a public method is honoured: already cancelled, the call changes nothing.</summary>
public class CancellationContractTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task BeginAsync_with_a_cancelled_token_opens_no_transaction_even_with_space_at_hand()
    {
        using var dir = new TempDir();
        await using var e = await Engines.Open(Engines.Options(dir.Path));
        var loc = e.Localities[0];
        var seg = loc.Segment!;
        await loc.RunAsync(async () =>
        {
            using var cts = new CancellationTokenSource();
            cts.Cancel();
            // Before: the fast path (log space available) ignored the token and returned an open transaction.
            var begin = seg.BeginAsync(TxCredit.Region(8), cts.Token);
            Assert.True(begin.IsCanceled);
            var ex = await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await begin);
            Assert.Equal(cts.Token, ex.CancellationToken);
            // Misuse is still reported before cancellation.
            await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await seg.BeginAsync(new TxCredit(-1, 0), cts.Token));
            using var tx = await seg.BeginAsync(TxCredit.Region(8));
            tx.Capture<long>(Engines.DataStart) = 1;
            await tx.Close();
        }).WaitAsync(T);
        Assert.Equal(0, seg.TxStats.Aborted);
        Assert.Equal(1, seg.TxStats.Closed);
    }
}

public class RecoveryCancellationTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);

    /// <summary>A crashed domain whose log holds <paramref name="records"/> records (one transaction with a payload each) not yet checkpointed.</summary>
    private static async Task<Motr.Be.Storage.SimStorage> CrashedWithRecords(int records)
    {
        var sim = new Motr.Be.Storage.SimStorage();
        var e = await Engines.Open(Engines.Sim(sim, segments: 1));
        var loc = e.Localities[0];
        for (int i = 1; i <= records; i++)
        {
            await loc.RunAsync(async () =>
            {
                using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8) + new TxCredit(0, 8));
                tx.Capture<long>(Engines.DataStart) = i;
                tx.SetPayload(BitConverter.GetBytes((long)i));
                tx.Force();
                await tx.Close();
            }).WaitAsync(T);
        }
        var image = sim.CrashImage(sim.OpCount, Motr.Be.Storage.CrashVariant.DropUnsynced, 1);
        await e.DisposeAsync();
        return image;
    }

    [Fact]
    public async Task OpenAsync_cancelled_during_recovery_stops_releases_the_folder_and_the_next_open_replays_everything()
    {
        var image = await CrashedWithRecords(4);
        using var cts = new CancellationTokenSource();
        int seen = 0;
        var o = Engines.Sim(image, segments: 1);
        o.OnRecoveredPayload = _ => { if (++seen == 2) cts.Cancel(); }; // the caller gives up half-way through the replay
        // Before: the token was looked at only before the open started; recovery ran to the end and the task
        // returned an open domain to a caller that had given up (and the folder stayed locked until it was closed).
        var open = Engine.OpenAsync(o, cts.Token);
        var ex = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => open.WaitAsync(T));
        Assert.True(open.IsCanceled);
        Assert.Equal(2, seen); // stopped at the next record

        var payloads = new List<long>();
        o.OnRecoveredPayload = p => payloads.Add(BitConverter.ToInt64(p.Payload.Span));
        await using var e = await Engine.OpenAsync(o).WaitAsync(T); // the folder was released
        Assert.Equal(new long[] { 1, 2, 3, 4 }, payloads);
        Assert.Equal(4, await e.Localities[0].RunAsync(() => e.Localities[0].Segment!.At<long>(Engines.DataStart)));
    }
}

public class CheckpointCancellationTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_caller_waiting_for_a_checkpoint_can_give_up_and_the_checkpoint_still_completes()
    {
        var hooks = new Motr.Be.Tests.TestSupport.HookStorage(new Motr.Be.Storage.SimStorage());
        var o = Engines.Sim(hooks.Inner, segments: 1);
        o.Storage = hooks;
        await using var e = await Engines.Open(o);
        var loc = e.Localities[0];
        await loc.RunAsync(async () =>
        {
            using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(8));
            tx.Capture<long>(Engines.DataStart) = 1;
            await tx.Close();
        }).WaitAsync(T);
        using var gate = new ManualResetEventSlim();
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        hooks.Before = (f, op, _, _) =>
        {
            if (op != "flush" || Thread.CurrentThread.Name != "motr-checkpoint") return;
            held.TrySetResult();
            gate.Wait(T); // the checkpoint's sync, held
        };
        using var cts = new CancellationTokenSource();
        var waiting = e.Domain.CheckpointAsync(cts.Token);
        await held.Task.WaitAsync(T);
        // Before: CheckpointAsync took no token; a caller had no way to stop waiting for a slow sync.
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting.WaitAsync(T));
        Assert.True(waiting.IsCanceled);
        gate.Set();
        hooks.Before = null;
        await e.Domain.CheckpointAsync().WaitAsync(T); // the held one finished; a new one works
        Assert.Null(e.Domain.Failure);
        // Already cancelled: no checkpoint is asked for.
        Assert.True(e.Domain.CheckpointAsync(new CancellationToken(true)).IsCanceled);
    }
}
