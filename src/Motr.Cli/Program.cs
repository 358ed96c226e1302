using System.Runtime.InteropServices;
using Motr.Cli;

// SIGINT and SIGTERM cancel the command instead of killing the process: a load then removes its partial tree and a
// dump its partial file (the engine closes cleanly either way).
using var cancel = new CancellationTokenSource();
void Stop(PosixSignalContext context)
{
    context.Cancel = true;
    cancel.Cancel();
}
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
return await MotrCommand.RunAsync(args, Console.Out, Console.Error, cancel.Token);
