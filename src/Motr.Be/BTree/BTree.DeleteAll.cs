using Motr.Be.Log;

namespace Motr.Be.BTree;

public sealed partial class BTree
{
    /// <summary>
    /// Deletes every record, at most <paramref name="batch"/> per transaction, each transaction opened with its
    /// own credit and awaited durable before the next. Interrupted (by a crash or cancellation) it leaves a
    /// valid tree holding what was not yet deleted; calling it again finishes the job. Returns how many
    /// records it deleted. Run on the tree's locality.
    /// </summary>
    /// <remarks>
    /// A batch is cut shorter when the worst case of that many deletes (every level merging) would reserve more
    /// than an eighth of the largest transaction the log accepts, so a deep tree of large nodes on a small log
    /// is emptied in smaller transactions instead of being refused.
    /// </remarks>
    /// <exception cref="BeCorruptionException">The tree's first key cannot be found by a descent: its keys are out of order for
    /// its comparer (a comparer that is not a total order, or damage). The batch under way is rolled back.</exception>
    public async Task<long> DeleteAllAsync(int batch = 64, IProgress<long>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        Enter();
        long deleted = 0;
        var cursor = OpenCursor();
        while (Count > 0)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int n = (int)Math.Min(batch, Count);
            var one = DeleteCredit();
            long limit = _seg.Domain.MaxTxReservation / 8;
            while (n > 1 && LogFormat.Reservation(one * n) > limit) n--;
            using var tx = await _seg.BeginAsync(one * n, cancellationToken);
            // The credit was computed before a possible wait for log space: recheck in this turn.
            if (!tx.Credit.Covers(DeleteCredit() * n))
            {
                tx.Abort();
                continue;
            }
            for (int i = 0; i < n && cursor.SeekFirst(); i++)
            {
                var key = CopySeparator(cursor.Key).ToArray();
                // The first key, found by the cursor, not found by a descent: the keys are out of order. Going on would
                // delete nothing and meet the same key again for ever.
                if (Delete(tx, key) != BTreeStatus.Ok) ThrowOutOfOrder(key);
                deleted++;
            }
            await tx.Close();
            progress?.Report(deleted);
        }
        return deleted;
    }

    private void ThrowOutOfOrder(byte[] key) =>
        throw new BeCorruptionException(_seg.FileName, _hdr, $"{Where}: delete-all cannot find its first key " +
            $"{Convert.ToHexString(key.AsSpan(0, Math.Min(key.Length, 32)))}{(key.Length > 32 ? ".." : "")} by a descent: the keys are out of order " +
            $"for the comparer '{ComparerName}' (one that is not a total order, or damage); Check names where");
}
