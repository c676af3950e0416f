// WKV Chat entry point. Kept thin: everything testable lives in the wkvchat_app library.
#include <QApplication>
#include <QMainWindow>

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setApplicationName(QStringLiteral("wkvchat"));
  QApplication::setApplicationDisplayName(QStringLiteral("WKV Chat"));
  QApplication::setApplicationVersion(QStringLiteral(WKV_APP_VERSION));
  QMainWindow window;
  window.setWindowTitle(QStringLiteral("WKV Chat"));
  window.resize(1100, 750);
  window.show();
  return app.exec();
}
