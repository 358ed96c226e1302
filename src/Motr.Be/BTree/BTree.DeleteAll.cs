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
                Delete(tx, key);
                deleted++;
            }
            await tx.Close();
            progress?.Report(deleted);
        }
        return deleted;
    }
}
