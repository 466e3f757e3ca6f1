/* plot.h — `anvil train plot`: metrics.jsonl -> SVG loss curves. */
#ifndef ANVIL_TRAIN_PLOT_H
#define ANVIL_TRAIN_PLOT_H

/* argv after "plot"; returns the exit code (0, 1, 2). */
int cmd_plot(int argc, char **argv);

#endif
