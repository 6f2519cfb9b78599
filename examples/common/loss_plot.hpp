// The examples' --plot FILE.png: training and validation loss curves from a CsvLog file
// (step,epoch,train_loss,validation_loss,validation_accuracy), drawn by gnuplot (Debian:
// gnuplot-nox). Without gnuplot the example says so and carries on: a plot is never a reason
// to lose a training run.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace examples {

/// Quotes `text` for a gnuplot string literal.
inline std::string gnuplot_string(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

/// Draws the loss curves of `csv` into the PNG `png` on a logarithmic axis: the batch losses,
/// their geometric mean over the last `window` steps, and the validation losses. Column 0 is the step; the training loss is in
/// column `train_column` and the validation loss in column `validation_column` (0-based), empty where a row
/// has none. The defaults read a dynrnn::CsvLog file. Returns "" on success, or what went wrong.
inline std::string plot_losses(const std::string& csv, const std::string& png, const std::string& title,
                               std::size_t train_column = 2, std::size_t validation_column = 3, std::size_t window = 50) {
  std::ifstream in(csv);
  if (!in) return "cannot read " + csv;
  std::string line;
  std::getline(in, line);  // header
  std::ostringstream train, validation;
  std::deque<double> recent;
  double sum = 0;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream fields(line);
    for (std::string field; std::getline(fields, field, ',');) f.push_back(field);
    if (f.size() > train_column && !f[train_column].empty()) {
      // The mean is taken of log(loss), as the axis is logarithmic: one spike moves it by its
      // 1/window share of the axis, not by its size.
      const double loss = std::stod(f[train_column]), log_loss = std::log(std::max(loss, 1e-30));
      recent.push_back(log_loss);
      sum += log_loss;
      if (recent.size() > window) {
        sum -= recent.front();
        recent.pop_front();
      }
      train << f[0] << ' ' << loss << ' ' << std::exp(sum / double(recent.size())) << '\n';
    }
    if (f.size() > validation_column && !f[validation_column].empty()) validation << f[0] << ' ' << f[validation_column] << '\n';
  }
  if (train.str().empty()) return csv + " holds no training losses";

  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0)
    return "gnuplot is not installed (Debian: gnuplot-nox); no plot was drawn";
  std::FILE* gp = popen("gnuplot", "w");
  if (!gp) return "cannot start gnuplot";
  std::fprintf(gp, "$train << EOD\n%sEOD\n$validation << EOD\n%sEOD\n", train.str().c_str(),
               validation.str().empty() ? "NaN NaN\n" : validation.str().c_str());
  std::fprintf(gp,
               "set terminal pngcairo size 960,540 font ',11'\n"
               "set output %s\n"
               "set title %s noenhanced\n"
               "set xlabel 'step'\nset ylabel 'loss'\nset logscale y\nset grid\nset key top right\n"
               "plot $train using 1:2 with lines lc rgb '#b8c8dc' title 'training, each batch', "
               "$train using 1:3 with lines lw 2 lc rgb '#1f4e9a' title 'training, geometric mean of %zu steps', "
               "$validation using 1:2 with linespoints lw 2 pt 7 lc rgb '#d2691e' title 'validation'\n",
               gnuplot_string(png).c_str(), gnuplot_string(title).c_str(), window);
  const int status = pclose(gp);
  if (status != 0) return "gnuplot failed (status " + std::to_string(status) + ") drawing " + png;
  return "";
}

/// --plot for an example called `program`: draws the curves when `png` is not empty and
/// prints where they are, or why there is no plot (the run goes on either way).
inline void plot_if_asked(const std::string& program, const std::string& png, const std::string& csv,
                          const std::string& title, std::size_t train_column = 2, std::size_t validation_column = 3) {
  if (png.empty()) return;
  const std::string problem = plot_losses(csv, png, title, train_column, validation_column);
  if (problem.empty())
    std::printf("loss curves: %s\n", png.c_str());
  else
    std::fprintf(stderr, "%s: --plot: %s\n", program.c_str(), problem.c_str());
}

}  // namespace examples
