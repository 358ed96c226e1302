using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Be.Tests.Tx;

/// <summary>
/// <see cref="Domain.CheckpointAsync"/> completes once every record handed to the placer before the call is placed,
/// synced and checkpointed — not at the first checkpoint that starts after the call, which may cover only part of them.
/// </summary>
public class CheckpointWaitTests
{
    private const long Off = Engines.DataStart;
    private static readonly TimeSpan Hang = TimeSpan.FromSeconds(60);

    private static Task Write(Locality loc, long offset, int length, byte value) => loc.RunAsync(async () =>
    {
        using var tx = await loc.Segment!.BeginAsync(TxCredit.Region(length));
        tx.Capture(offset, length).Fill(value);
        await tx.Close();
    });

    /// <summary>
    /// The placer checkpoints in the middle of a backlog once enough of it is placed (or someone waits for space). A
    /// checkpoint asked for while it is placing record A, with record B durable and queued behind it, must not complete at
    /// the checkpoint of A alone: a caller who saw B persist and then asked for a checkpoint would take B's log space as
    /// free (and B's bytes as in their segment file) when neither is so.
    /// </summary>
    [Fact]
    public async Task A_checkpoint_covers_every_record_durable_before_it_was_asked_for_not_only_the_placed_ones()
    {
        var sim = new SimStorage();
        var hooks = new HookStorage(sim);
        var o = Engines.Sim(sim, segments: 1);
        o.Storage = hooks;
        o.CheckpointFraction = 0.01; // record A alone is enough for the placer to checkpoint before it places B
        await using var e = await Engines.Open(o);
        var loc = e.Localities[0];
        var placingA = new ManualResetEventSlim();
        var releaseA = new ManualResetEventSlim();
        int armed = 1;
        string seg1 = BeConstants.SegmentFileName(1);
        hooks.Before = (f, op, _, _) =>
        {
            if (f.Name != seg1 || op != "write" || Thread.CurrentThread.Name != "motr-placer") return;
            if (Interlocked.Exchange(ref armed, 0) == 0) return;
            placingA.Set();
            releaseA.Wait(Hang);
        };
        int a = (int)(e.Domain.CheckpointBytes + 4096);
        await Write(loc, Off, a, 1).WaitAsync(Hang);          // A: durable, its placing held
        Assert.True(placingA.Wait(Hang));
        await Write(loc, Off + a + 4096, 64, 2).WaitAsync(Hang); // B: durable, queued behind A
        var checkpoint = e.Domain.CheckpointAsync();
        releaseA.Set();
        await checkpoint.WaitAsync(Hang);
        Assert.True(e.Domain.Stats.LogUsed == 0,
            $"the checkpoint completed with {e.Domain.Stats.LogUsed} bytes of the log not checkpointed: record B, durable before it was asked for, is not in it");
    }
}
