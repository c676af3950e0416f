// WKV Chat entry point. Kept thin: everything testable lives in the wkvchat_app library.
//
// Options besides Qt's own:
//   --model PATH          load this model (same as WKVCHAT_MODEL)
//   --mode NAME           quantization mode for --model
//   --demo-prompt TEXT    send TEXT once the model is loaded (demos, screenshots)
//   --screenshot PATH     after the demo reply is finished, save the window as PATH and quit
#include <QApplication>
#include <QCommandLineParser>
#include <QIcon>
#include <QTimer>

#include <cstdio>

#include "chat/ChatController.h"
#include "ui/MainWindow.h"

#include <QPlainTextEdit>

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setApplicationName(QStringLiteral("wkvchat"));
  QApplication::setApplicationDisplayName(QStringLiteral("WKV Chat"));
  QApplication::setApplicationVersion(QStringLiteral(WKV_APP_VERSION));
  QApplication::setDesktopFileName(QStringLiteral("wkvchat"));
  QApplication::setWindowIcon(QIcon(QStringLiteral(":/icons/wkvchat.svg")));

  QCommandLineParser parser;
  parser.setApplicationDescription(QStringLiteral("Local LLM chat with 4-bit weights and a 4-bit KV cache"));
  parser.addHelpOption();
  parser.addVersionOption();
  QCommandLineOption modelOpt(QStringLiteral("model"), QStringLiteral("Model to load."), QStringLiteral("PATH"));
  QCommandLineOption modeOpt(QStringLiteral("mode"), QStringLiteral("Quantization mode."), QStringLiteral("NAME"));
  QCommandLineOption demoOpt(QStringLiteral("demo-prompt"), QStringLiteral("Send TEXT when the model is ready."),
                             QStringLiteral("TEXT"));
  QCommandLineOption shotOpt(QStringLiteral("screenshot"),
                             QStringLiteral("Save the window to PATH after the demo reply, then quit."),
                             QStringLiteral("PATH"));
  parser.addOptions({modelOpt, modeOpt, demoOpt, shotOpt});
  parser.process(app);
  if (parser.isSet(modelOpt)) qputenv("WKVCHAT_MODEL", parser.value(modelOpt).toUtf8());
  if (parser.isSet(modeOpt)) qputenv("WKVCHAT_MODE", parser.value(modeOpt).toUtf8());

  MainWindow window;
  window.show();

  const QString demo = parser.value(demoOpt);
  const QString shot = parser.value(shotOpt);
  if (!demo.isEmpty()) {
    QObject::connect(&window, &MainWindow::modelReady, &window, [&window, demo] {
      window.composer()->setPlainText(demo);
      window.submitComposer();
    }, Qt::SingleShotConnection);
  }
  if (!shot.isEmpty()) {
    auto save = [&window, shot] {
      const bool ok = window.grab().save(shot);
      std::fprintf(ok ? stdout : stderr, "%s %s\n", ok ? "saved" : "could not save", qPrintable(shot));
      QApplication::exit(ok ? 0 : 1);
    };
    if (demo.isEmpty()) {
      QTimer::singleShot(1500, &window, save);
    } else {
      QObject::connect(window.controller(), &ChatController::replyFinished, &window,
                       [save] { QTimer::singleShot(600, save); });
      QObject::connect(window.controller(), &ChatController::replyFailed, &window,
                       [save] { QTimer::singleShot(600, save); });
      QObject::connect(window.controller(), &ChatController::modelFailed, &window,
                       [save] { QTimer::singleShot(600, save); });
    }
    QTimer::singleShot(180000, &window, [] {
      std::fprintf(stderr, "timed out waiting for the demo reply\n");
      QApplication::exit(2);
    });
  }
  return app.exec();
}
