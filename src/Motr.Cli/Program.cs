using System.Runtime.InteropServices;
using Motr.Cli;

// SIGINT and SIGTERM cancel the command instead of killing the process: a load then removes its partial tree and a
// dump its partial file (the engine closes cleanly either way), and fsck stops before its next segment.
// A second signal ends the process at once (the signal's default action): the command did not stop because it is
// where no cancellation reaches (a long recovery replaying, a read blocked on a FIFO or a hung file system), and
// a process that ignores Ctrl-C could then be stopped only by SIGKILL. The domain is crash-consistent: its next
// open recovers it, the next load removes a partial tree, and a dump may leave <file>.partial.
using var cancel = new CancellationTokenSource();
int signals = 0;
void Stop(PosixSignalContext context)
{
    if (Interlocked.Increment(ref signals) > 1)
    {
        Console.Error.WriteLine($"motr: {context.Signal} again: stopping at once; the domain's next open recovers it");
        return;   // context.Cancel stays false: the default action ends the process
    }
    context.Cancel = true;
    cancel.Cancel();
}
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
return await MotrCommand.RunAsync(args, Console.Out, Console.Error, cancel.Token);
